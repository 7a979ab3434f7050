"""Dataset push throughput and memory against a raw pyarrow CSV → Parquet conversion of the same file.

The baseline is what a careful engineer writes by hand: pyarrow's streaming CSV
reader feeding a ParquetWriter, no checks, no statistics, no hashing, no store.
The push does the same reading and writing plus type normalization, pandera
validation per block, row hashing for duplicates, streaming statistics,
fixed row groups, sha256, and the copy into the artifact store. Each side runs
in its own fresh subprocess on the same file (page cache warmed first), so
peak RSS is the high-water mark of exactly one conversion (VmHWM: Linux carries
ru_maxrss over from the parent across exec, so a bench run after other suites
would report the runner's own peak); the better of
``repeats`` interleaved runs is kept.

Run: ``python -m bench.bench_datasets [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

TARGET_THROUGHPUT = 0.6    # push MB/s vs raw conversion MB/s
TARGET_PEAK_MB = 1024      # peak RSS of the push process, for a 1 GB file
ROWS_PER_CHUNK = 200_000

def _measured(setup: str, work: str) -> str:
    """A script that runs ``setup`` untimed, then times ``work`` (which sets ``extra``, a dict) and prints
    seconds, CPU seconds and the process's own peak RSS as JSON: both sides are measured the same way."""
    return textwrap.dedent('''
        import json, resource, sys, time
        def hwm_kb():   # VmHWM: this process's own peak; ru_maxrss would carry over the parent's across exec
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
    ''') + textwrap.dedent(setup) + textwrap.dedent('''
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0, t0 = ru0.ru_utime + ru0.ru_stime, time.perf_counter()
    ''') + textwrap.dedent(work) + textwrap.dedent('''
        seconds = time.perf_counter() - t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"seconds": seconds, "peak_kb": hwm_kb(), "cpu": ru.ru_utime + ru.ru_stime - cpu0, **extra}))
    ''')


_BASELINE = _measured('''
    import pyarrow.csv as pcsv, pyarrow.parquet as pq
    src, dst = sys.argv[1:3]
''', '''
    reader = pcsv.open_csv(src, read_options=pcsv.ReadOptions(block_size=16 << 20))
    with pq.ParquetWriter(dst, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
    extra = {}
''')

_PUSH = _measured('''
    from infra.storage import open_store
    from producers.datasets import push_dataset
    src, root = sys.argv[1:3]
''', '''
    res = push_dataset(src, {"name": "bench", "label": "label", "slice_by": ["region"]},
                       store=open_store(root), publisher=None, topic="unused", workdir=root)
    extra = {"rows": res.row_count, "version": res.version}
''')


def make_csv(path: Path, target_bytes: int, seed: int = 0) -> int:
    """A churn-like CSV of about ``target_bytes``: 8 floats, 2 ints, 2 categories, a binary label."""
    rng = np.random.default_rng(seed)
    regions = np.array(["eu-west", "eu-north", "us-east", "us-west", "apac", "latam"])
    plans = np.array([f"plan-{i}" for i in range(40)])
    with pcsv.CSVWriter(str(path), pa.schema([(f"x{i}", pa.float64()) for i in range(8)] + [
            ("age", pa.int64()), ("tenure", pa.int64()), ("region", pa.string()), ("plan", pa.string()),
            ("label", pa.string())])) as writer:
        while path.stat().st_size < target_bytes:
            n = ROWS_PER_CHUNK
            cols = {f"x{i}": np.round(rng.normal(size=n), 4) for i in range(8)}
            cols.update(age=rng.integers(18, 90, n), tenure=rng.integers(0, 120, n),
                        region=regions[rng.integers(0, len(regions), n)], plan=plans[rng.integers(0, 40, n)],
                        label=np.where(rng.random(n) < 0.3, "yes", "no"))
            writer.write_table(pa.table(cols))
    return path.stat().st_size


def _subprocess(script: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=3600,
                          cwd=Path(__file__).resolve().parents[1])
    if proc.returncode:
        raise RuntimeError(f"benchmark subprocess failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _record(figure: str, value: float, unit: str, baseline: str, baseline_value: float, target: float,
            met: bool) -> dict:
    return {"figure": figure, "value": round(value, 1), "unit": unit, "baseline": baseline,
            "baseline_value": round(baseline_value, 1), "ratio": round(value / baseline_value, 3),
            "target": target, "met": bool(met)}


def run(quick: bool = False, repeats: int | None = None) -> list[dict]:
    """Records for push MB/s (vs raw conversion, same file, same run) and push peak RSS."""
    size = (50 << 20) if quick else (1 << 30)
    repeats = repeats or (2 if quick else 1)
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as tmp:
        tmp_path = Path(tmp)
        csv = tmp_path / "data.csv"
        nbytes = make_csv(csv, size)
        with open(csv, "rb") as fh:  # warm the page cache so neither side pays the first read
            while fh.read(16 << 20):
                pass
        base, push = [], []
        for i in range(repeats):
            base.append(_subprocess(_BASELINE, str(csv), str(tmp_path / f"raw{i}.parquet")))
            (tmp_path / f"raw{i}.parquet").unlink()
            push.append(_subprocess(_PUSH, str(csv), str(tmp_path / f"store{i}")))
            subprocess.run(["rm", "-rf", str(tmp_path / f"store{i}")], check=True)
    mb = nbytes / 1e6
    b, p = min(base, key=lambda r: r["seconds"]), min(push, key=lambda r: r["seconds"])
    peak_push = max(r["peak_kb"] for r in push) / 1024
    peak_base = max(r["peak_kb"] for r in base) / 1024
    label = f"pyarrow_csv_to_parquet_streaming ({mb:.0f} MB CSV, {p['rows']} rows)"
    b_cpu, p_cpu = min(r["cpu"] for r in base), min(r["cpu"] for r in push)
    return [
        _record("dataset_push_throughput", mb / p["seconds"], "MB/s", label, mb / b["seconds"], TARGET_THROUGHPUT,
                (mb / p["seconds"]) / (mb / b["seconds"]) >= TARGET_THROUGHPUT),
        # CPU-seconds per MB as a rate: what the throughput ratio becomes when every core is busy anyway.
        _record("dataset_push_cpu_throughput", mb / p_cpu, "MB/cpu-s", label, mb / b_cpu, TARGET_THROUGHPUT,
                (mb / p_cpu) / (mb / b_cpu) >= TARGET_THROUGHPUT),
        _record("dataset_push_peak_rss", peak_push, "MB", label, peak_base, TARGET_PEAK_MB,
                peak_push < TARGET_PEAK_MB),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~50 MB file instead of ~1 GB")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    for rec in run(quick=args.quick, repeats=args.repeats):
        print(json.dumps(rec))


if __name__ == "__main__":
    main()
