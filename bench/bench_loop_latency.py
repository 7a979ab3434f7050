"""Loop overhead: DatasetCreated → ModelRegistered minus the training itself, on the embedded stack.

A real tansu broker, a local artifact store and one training consumer (the
production ``build_runner``) in this process. For each fresh dataset version
the clock starts at the DatasetCreated header's ``event_time`` and stops when a
separate reader receives the ModelRegistered; the run's own
``train_and_evaluate`` seconds (reported in its finished update) are
subtracted. What remains is what the platform adds: delivery, dataset pull and
checksum, the run ledger, artifact upload, the events and their acknowledgement.
The same-run baseline is the training time the overhead is added to.

Run: ``python -m bench.bench_loop_latency [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET_S = 3.0
SPEC = {"epochs": 2, "batch_size": 64, "hidden_sizes": [16], "device": "cpu", "min_slice_rows": 5}


def _frame(seed: int, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"age": rng.normal(40, 10, n).round(1), "income": rng.lognormal(3, 0.5, n).round(2),
                       "plan": rng.choice(["basic", "pro", "max"], n)})
    score = (df["age"] - 40) / 10 + np.where(df["plan"] == "pro", 1.0, -0.5) + rng.normal(0, 1, n)
    df["churned"] = np.where(score > 0, "yes", "no")
    return df


class _Reader:
    """Receives TrainingRunUpdated and ModelRegistered and notes when each arrived."""

    def __init__(self, settings) -> None:
        from infra.kafka import topics as T
        from infra.kafka.reader import TopicReader

        self.reader = TopicReader(settings, [settings.topic(T.DATASETS_CREATED), settings.topic(T.TRAINING_RUNS),
                                             settings.topic(T.MODELS_REGISTERED)], start="end", name="bench")
        self.created: dict[str, float] = {}   # DatasetCreated event id → its event_time (s)
        self.finished: dict[str, dict] = {}
        self.registered: dict[str, tuple[float, dict]] = {}

    def wait_registered(self, run_pred, timeout: float = 120.0) -> tuple[float, dict, dict]:
        """(seconds from DatasetCreated to receiving ModelRegistered, ModelRegistered, finished update)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            envs = self.reader.poll(50, 0.05)
            got = time.time()
            for d in envs:
                if d.event_type == "DatasetCreated":
                    h = d.value["header"]
                    self.created[str(h["event_id"])] = h["event_time"].timestamp()
                elif d.event_type == "ModelRegistered":
                    self.registered[d.value["run_id"]] = (got, d.value)
                elif d.value["status"] == "finished":
                    self.finished[d.value["run_id"]] = d.value
            for run_id, (got, reg) in self.registered.items():
                parent = reg["header"]["parent_event_ids"][0]
                if run_pred(reg) and run_id in self.finished and parent in self.created:
                    return got - self.created[parent], reg, self.finished[run_id]
        raise TimeoutError("no ModelRegistered within the timeout")

    def close(self) -> None:
        self.reader.close()


def run(quick: bool = False) -> list[dict]:
    """Records: median and worst platform overhead per registered model, next to the training time itself."""
    import torch

    from consumers.training import build_runner
    from infra.app.stack.process import free_port
    from infra.app.stack.tansu import TansuBroker
    from infra.kafka import EventProducer
    from infra.kafka.admin import ensure_topics
    from infra.settings import load_settings
    from infra.storage.factory import store_from_settings
    from producers.sdk import ModelBus

    rounds = 3 if quick else 10
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny model: threads only add contention noise
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        broker = TansuBroker("127.0.0.1", free_port(), Path(tmp) / "tansu")
        broker.start(timeout=30)
        try:
            s = load_settings(stack={"data_dir": str(Path(tmp) / "data")}).with_overrides(
                kafka={"bootstrap_servers": broker.bootstrap, "session_timeout_ms": 2000,
                       "heartbeat_interval_ms": 500, "topic_prefix": "bench"},
                artifacts={"root": str(Path(tmp) / "artifacts")},
                training={"checkpoint_dir": str(Path(tmp) / "ckpt"), "default_spec": SPEC})
            ensure_topics(s)
            producer = EventProducer(s, name="consumers.training")
            runner = build_runner(s, store_from_settings(s), producer)
            worker = threading.Thread(target=runner.run, daemon=True)
            worker.start()
            reader = _Reader(s)
            overheads, trains = [], []
            try:
                with ModelBus(s) as mb:
                    for i in range(rounds + 1):   # round 0 warms imports and the consumer's first fetch
                        pushed = mb.push_dataset(_frame(i), name="bench", label="churned")
                        loop_s, _, fin = reader.wait_registered(lambda r, v=pushed.version: r["dataset_version"] == v)
                        train = fin["metrics"]["train_evaluate_s"]
                        if i:
                            overheads.append(loop_s - train)
                            trains.append(train)
            finally:
                reader.close()
                runner.stop()
                worker.join(60)
        finally:
            broker.stop()
            torch.set_num_threads(threads)
    med, worst, train_med = statistics.median(overheads), max(overheads), statistics.median(trains)
    base = f"train_and_evaluate of the same runs (median of {rounds})"
    return [
        _record(f"DatasetCreated → ModelRegistered minus training, median of {rounds}", med, base, train_med),
        _record(f"DatasetCreated → ModelRegistered minus training, worst of {rounds}", worst, base, train_med),
    ]


def _record(figure: str, value: float, baseline: str, baseline_value: float) -> dict:
    return {"figure": figure, "value": round(value, 3), "unit": "s", "baseline": baseline,
            "baseline_value": round(baseline_value, 3), "ratio": round(value / baseline_value, 3),
            "target": f"< {TARGET_S:.0f} s", "met": bool(value < TARGET_S)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 10")
    args = parser.parse_args()
    for rec in run(quick=args.quick):
        print(json.dumps(rec, ensure_ascii=False))


if __name__ == "__main__":
    main()
