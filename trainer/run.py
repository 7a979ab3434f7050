"""``train_and_evaluate``: data in, evaluated and exported model out.

This is the one entry point the training consumer and the CLI call. It runs
the checks, the split, preprocessing, training (single process or DDP),
baselines, evaluation and export, and writes everything into ``out_dir`` in the
layout of the model artifact contract, ready to upload as is.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from schemas.types import BehaviourTestResult
from trainer.auto import Candidate, ensemble, first_deadline, run_deadline, search, seeded_fit
from trainer.baselines import run_baselines
from trainer.behaviour import run_behaviour_tests
from trainer.calibration import fit_calibration
from trainer.checks import run_checks
from trainer.data import Split, Table, as_table, encode_labels, row_hashes, row_ids, split_indices
from trainer.errors import TrainingCheckError
from trainer.evaluate import compute_metrics, primary_metric, slice_metrics, slice_values
from trainer.export import export_model, load_exported, predict_columns, sample_columns
from trainer.loop import (
    CheckpointErrorCallback,
    EpochCallback,
    ProgressCallback,
    TensorSet,
    predict,
    resolve_device,
)
from trainer.models import ModelConfig, param_count, resolve_kind
from trainer.predictions import PREDICTIONS_FILE, write_test_predictions
from trainer.preprocess import Preprocessing, fit_preprocessing, numeric_values
from trainer.provenance import code_version, environment
from trainer.report import ReportInput, write_report
from trainer.spec import DatasetInfo, TrainingSpec
from trainer.stats import PREDICTION, column_stats

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE, REFERENCE_STATS_FILE, REPORT_DIR = "metrics.json", "reference_stats.json", "report"
SAMPLE_ROWS = 4


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one run: what ModelRegistered and the final TrainingRunUpdated carry."""

    task: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, dict[str, float]]
    slice_metrics: list[dict[str, Any]]
    reference_stats: list[dict[str, Any]]
    primary_metric: str
    higher_is_better: bool
    labels: list[str]
    signature: dict[str, Any]
    artifact_dir: Path
    files: dict[str, str]  # name ('model', 'signature', 'report/roc_curve', ...) -> path relative to artifact_dir
    checksum: str
    params: dict[str, Any]
    seed: int
    duration_s: float
    environment: dict[str, str]
    code_version: str
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int
    split_sizes: dict[str, int]
    warnings: tuple[str, ...]
    behaviour_tests: tuple[BehaviourTestResult, ...] = ()
    calibration: dict[str, Any] | None = None   # trainer.calibration: for label-free live quality estimates

    def final_metrics(self) -> dict[str, float]:
        """Flat map for TrainingRunUpdated: ``test_<metric>`` and ``baseline_<name>_<metric>``."""
        flat = {f"test_{k}": v for k, v in self.metrics.items()}
        for name, ms in self.baseline_metrics.items():
            flat.update({f"baseline_{name}_{k}": v for k, v in ms.items()})
        return flat


def train_and_evaluate(data: Any, info: DatasetInfo, spec: TrainingSpec, out_dir: str | Path,
                       checkpoint_dir: str | Path | None = None, on_epoch: EpochCallback | None = None,
                       should_stop: Callable[[], bool] | None = None, *, progress: ProgressCallback | None = None,
                       on_checkpoint_error: CheckpointErrorCallback | None = None,
                       model_version: int | None = None) -> TrainResult:
    """Train, evaluate and export one model; write the artifact layout into ``out_dir``.

    ``data``: a DataFrame, a ``{column: array}`` mapping or ``(X, y)`` arrays.
    With ``checkpoint_dir`` the run checkpoints every epoch and resumes from an
    existing checkpoint. Raises ``TrainingCheckError`` for unusable data,
    ``NonFiniteLossError`` on divergence and ``TrainingStopped`` when
    ``should_stop()`` asks to stop. ``progress(stage, done, total)`` is called
    with stages 'prepare', 'batch', 'epoch' and 'evaluate'.
    """
    started = time.perf_counter()
    step = progress or (lambda stage, done, total: None)
    step("prepare", 0, 1)
    table = as_table(data, info)
    y, labels = encode_labels(table.frame[info.label_column], info.task)
    if info.task == "binary" and len(labels) > 2:
        raise TrainingCheckError(f"task is 'binary' but the label has {len(labels)} classes; use 'multiclass'")
    checked = run_checks(table, info, y, labels, spec)
    split = split_indices(table, info, y, val_fraction=spec.val_fraction, test_fraction=spec.test_fraction)
    requested_hash, spec = spec.spec_hash(), spec.resolved(len(split.train))
    regression = info.task == "regression"
    prep = fit_preprocessing(table, checked.features, split.train,
                             image_column=info.feature_columns[0] if info.is_image else None,
                             image_shape=info.image_shape, y_train=y[split.train] if regression else None)
    sets = {name: TensorSet(prep.encode(table, rows), _target(y[rows], prep, regression))
            for name, rows in (("train", split.train), ("val", split.val), ("test", split.test))}
    cfg = ModelConfig(
        kind=resolve_kind(spec.model, info.is_image), n_outputs=1 if regression else len(labels),
        hidden_sizes=spec.hidden_sizes, dropout=spec.dropout, n_numeric=len(prep.numeric),
        cardinalities=tuple(prep.cardinalities), embedding_dim=spec.embedding_dim,
        image_shape=tuple(info.image_shape), cnn_channels=spec.cnn_channels)
    device = resolve_device(spec.device)
    fingerprint = _fingerprint(info, spec, cfg, split, sets["train"])
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    step("prepare", 1, 1)

    searched, members = None, 1
    if spec.world_size > 1:
        from trainer.ddp import train_distributed  # launches subprocesses; imported only when used

        net, fitted = train_distributed(cfg, sets["train"], sets["val"], spec, task=info.task, device=device,
                                        fingerprint=fingerprint, checkpoint_path=ckpt, on_epoch=on_epoch,
                                        should_stop=should_stop, progress=progress,
                                        on_checkpoint_error=on_checkpoint_error)
    else:
        fit_started = time.monotonic()
        net, fitted = seeded_fit(cfg, spec, sets["train"], sets["val"], task=info.task, device=device,
                                 fingerprint=fingerprint, checkpoint_path=ckpt, on_epoch=on_epoch,
                                 should_stop=should_stop, progress=progress,
                                 on_checkpoint_error=on_checkpoint_error, deadline=first_deadline(spec, fit_started))
        if spec.search_trials:
            net, fitted, spec, cfg, searched = _choose(Candidate(net, fitted, spec, cfg, math.nan), sets, y, split,
                                                       prep, info, len(labels), device, fit_started, should_stop)
        net, members = ensemble(Candidate(net, fitted, spec, cfg, math.nan), train=sets["train"], val=sets["val"],
                                task=info.task, device=device, deadline=run_deadline(spec, fit_started),
                                should_stop=should_stop)
    step("evaluate", 0, 3)
    test_out = _outputs(net, sets["test"].inputs, prep, regression, device)
    y_test = y[split.test]
    metrics = compute_metrics(info.task, y_test, test_out)
    baseline_out = run_baselines(info.task, sets["train"].inputs, y[split.train], sets["test"].inputs,
                                 cardinalities=prep.cardinalities, n_classes=len(labels), seed=spec.seed,
                                 raw_train=_raw_numeric(table, prep, split.train),
                                 raw_test=_raw_numeric(table, prep, split.test))
    baselines = {name: compute_metrics(info.task, y_test, o) for name, o in baseline_out.items()}
    step("evaluate", 1, 3)
    shown = [c for c in dict.fromkeys([*checked.features, info.label_column, *info.slice_columns,
                                       *([info.time_column] if info.time_column else [])]) if c in table.frame]
    test_frame = table.frame.iloc[split.test][shown].reset_index(drop=True)
    slices = slice_metrics(info.task, test_frame, info.slice_columns, y_test, test_out, min_rows=spec.min_slice_rows)
    train_out = _outputs(net, sets["train"].inputs, prep, regression, device)
    calibration = fit_calibration(info.task, y[split.val], _outputs(net, sets["val"].inputs, prep, regression,
                                                                     device))
    net = net.cpu().eval()
    ref_stats = _reference_stats(table, split, prep, train_out, labels, regression)
    step("evaluate", 2, 3)
    primary, higher = primary_metric(info.task)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_name = spec.model_name or info.name
    sample = _sample(table, split, prep)
    exported = export_model(out, net, prep, task=info.task, labels=labels, model_name=model_name,
                            model_version=model_version, sample=sample)
    warnings = (*checked.warnings, *fitted.warnings)
    behaviour = _behaviour(spec, out, test_frame, info.task, labels, y_test)
    write_test_predictions(out / PREDICTIONS_FILE, row_ids(row_hashes(table, info)[split.test]), y_test,
                           {"candidate": test_out, **baseline_out},
                           {c: slice_values(test_frame[c]) for c in info.slice_columns})
    report_files = write_report(out / REPORT_DIR, ReportInput(
        task=info.task, labels=labels, y_test=y_test, output=test_out, metrics=metrics, baseline_metrics=baselines,
        slices=slices, test_frame=test_frame, test_rows=split.test, primary_metric=primary, higher_is_better=higher,
        title=f"{model_name} on {info.name}", warnings=warnings,
        facts={"dataset": f"{info.name} {info.version}".strip(), "task": info.task, "model": cfg.kind,
               "parameters": param_count(net), "split": f"{split.strategy} {split.sizes()}",
               "epochs": f"{fitted.epochs_run} (best {fitted.best_epoch})", "seed": spec.seed}))
    step("evaluate", 3, 3)

    params = {**spec.model_dump(mode="json"), "resolved_model": cfg.kind, "resolved_device": str(device),
              "features": list(checked.features), "n_parameters": param_count(net), "spec_hash": requested_hash,
              "ensemble_members": members,
              **({"auto_search": searched.as_dict()} if searched else {})}
    env = environment(device, spec.world_size)
    _dump(out / METRICS_FILE, {
        "task": info.task, "primary_metric": primary, "higher_is_better": higher, "metrics": metrics,
        "baseline_metrics": baselines, "slice_metrics": slices, "history": fitted.history,
        "best_epoch": fitted.best_epoch, "split": {"strategy": split.strategy, **split.sizes()},
        "params": params, "warnings": list(warnings), "behaviour_tests": behaviour})
    _dump(out / REFERENCE_STATS_FILE, ref_stats)
    files = {**exported.files, "metrics": out / METRICS_FILE, "reference_stats": out / REFERENCE_STATS_FILE,
             "test_predictions": out / PREDICTIONS_FILE,
             **{f"report/{k}": v for k, v in report_files.items()}}
    return TrainResult(
        task=info.task, metrics=metrics, baseline_metrics=baselines, slice_metrics=slices,
        reference_stats=ref_stats, primary_metric=primary, higher_is_better=higher, labels=labels,
        signature=exported.signature, artifact_dir=out,
        files={k: str(Path(v).relative_to(out)) for k, v in files.items()}, checksum=exported.checksum,
        params=params, seed=spec.seed, duration_s=time.perf_counter() - started, environment=env,
        code_version=code_version(), history=fitted.history, best_epoch=fitted.best_epoch,
        epochs_run=fitted.epochs_run, resumed_from_epoch=fitted.resumed_from, split_sizes=split.sizes(),
        warnings=tuple(warnings), behaviour_tests=tuple(behaviour), calibration=calibration)


def _raw_numeric(table: Table, prep: Preprocessing, rows: np.ndarray) -> np.ndarray | None:
    """Numeric features before imputation (NaN = missing), for the baseline that handles missing values."""
    if prep.is_image:
        return None
    frame = table.frame.iloc[rows]
    return np.stack([numeric_values(frame[i.column]) for i in prep.numeric], axis=1) if prep.numeric \
        else np.zeros((len(rows), 0), dtype=np.float32)


def _behaviour(spec: TrainingSpec, out: Path, test_frame: pd.DataFrame, task: str, labels: list[str],
               y_test: np.ndarray) -> list[BehaviourTestResult]:
    """The spec's behavioural tests, run on the exported model (what will serve) over the test split."""
    if not spec.behaviour_tests:
        return []
    model, sig = load_exported(out)
    names = [o["name"] for o in sig["outputs"]]

    def predict(columns: dict[str, list]) -> tuple[np.ndarray, np.ndarray]:
        res = predict_columns(model, sig, columns)
        return res[names[0]], res[names[1]]

    return run_behaviour_tests(spec.behaviour_tests, predict, test_frame, sig["inputs"], task=task, labels=labels,
                               y=y_test)


def _choose(first: Candidate, sets: dict[str, TensorSet], y: np.ndarray, split: Split, prep: Preprocessing,
            info: DatasetInfo, n_classes: int, device: torch.device, started: float,
            should_stop: Callable[[], bool] | None = None):
    """The automatic search's pick (``trainer.auto``), judged against the baselines on the validation split."""
    regression, (primary, higher) = info.task == "regression", primary_metric(info.task)
    y_val = y[split.val]

    def score(net: torch.nn.Module) -> float:
        return compute_metrics(info.task, y_val, _outputs(net, sets["val"].inputs, prep, regression, device))[primary]

    first.val_score = score(first.net)
    base_out = run_baselines(info.task, sets["train"].inputs, y[split.train], sets["val"].inputs,
                             cardinalities=prep.cardinalities, n_classes=n_classes, seed=first.spec.seed)
    base = {name: compute_metrics(info.task, y_val, o) for name, o in base_out.items()}
    best, report = search(first, train=sets["train"], val=sets["val"], task=info.task, device=device, score=score,
                          baselines={k: v[primary] for k, v in base.items() if primary in v}, higher=higher,
                          deadline=run_deadline(first.spec, started), should_stop=should_stop)
    return best.net, best.fitted, best.spec, best.cfg, report


def _target(y: np.ndarray, prep: Preprocessing, regression: bool) -> torch.Tensor:
    if regression:
        return torch.from_numpy(((y - prep.target_mean) / prep.target_std).astype(np.float32))
    return torch.from_numpy(y.astype(np.int64))


def _outputs(net: torch.nn.Module, inputs: tuple[torch.Tensor, ...], prep: Preprocessing, regression: bool,
             device: torch.device) -> np.ndarray:
    """What the exported model returns as scores: probabilities, or de-standardized predictions.

    Full precision (no autocast) so the reported metrics are those of the exported FP32 model.
    """
    raw = predict(net, inputs, device)
    if regression:
        return (raw.reshape(-1) * prep.target_std + prep.target_mean).numpy()
    return torch.softmax(raw, dim=1).numpy()


def _reference_stats(table: Table, split: Split, prep: Preprocessing, train_out: np.ndarray, labels: list[str],
                     regression: bool) -> list[dict[str, Any]]:
    """Training-split distributions of the tabular features and of the prediction (the drift reference)."""
    stats = []
    if not prep.is_image:
        frame = table.frame.iloc[split.train]
        stats = [column_stats(frame[i.column], name=i.column, kind=i.kind) for i in prep.inputs]
    pred = pd.Series(train_out) if regression else pd.Series([labels[i] for i in train_out.argmax(axis=1)])
    stats.append(column_stats(pred, name=PREDICTION, kind="numeric" if regression else "categorical"))
    return stats


def _sample(table: Table, split: Split, prep: Preprocessing) -> dict[str, list[Any]]:
    rows = split.test[:SAMPLE_ROWS]
    if prep.is_image:
        return {prep.inputs[0].column: np.nan_to_num(table.pixels[rows]).tolist()}
    frame = table.frame.iloc[rows]
    sig = {"inputs": [{"column": i.column, "kind": i.kind} for i in prep.inputs]}
    return sample_columns(sig, {i.column: frame[i.column] for i in prep.inputs})


def _fingerprint(info: DatasetInfo, spec: TrainingSpec, cfg: ModelConfig, split: Split, train: TensorSet) -> str:
    """Identity of a run's training state; a checkpoint with another fingerprint is not resumed.

    The training tensors are hashed too, so a checkpoint directory reused with
    different data (same name, no version) starts over instead of resuming.
    """
    h = hashlib.sha256(json.dumps({"dataset": [info.name, info.version], "spec": spec.spec_hash(),
                                   "model": cfg.to_dict(), "split": split.sizes()}, sort_keys=True).encode())
    for t in (*train.inputs, train.target):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _dump(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")

