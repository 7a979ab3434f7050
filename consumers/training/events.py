"""The events a training run emits: TrainingRunUpdated and ModelRegistered values.

Event ids are derived from the run id (uuid5), so a re-sent event is
recognisably the same event: one ModelRegistered id per run, one ``finished``
id per (run, triggering event), one ``started``/``epoch`` id per attempt.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any, Mapping, cast

from schemas.events import child_header
from schemas.types import ModelRegistered, TrainingRunUpdated

PRODUCER = "consumers.training"
_NAMESPACE = uuid.UUID("6f0d8a52-8f4e-4a59-9a57-2f3c1b7e9d10")


def event_id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def registered_event_id(run_id: str) -> str:
    """The one ModelRegistered event id of a run."""
    return event_id(run_id, "registered")


def numeric_map(values: Mapping[str, Any]) -> dict[str, float]:
    """Metrics as a map of doubles; non-numbers are left out (Avro map<double>)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[str(k)] = float(v)
    return out


def run_update(job: Any, status: str, *, attempt: int, eid: str, epoch: int | None = None,
               metrics: Mapping[str, Any] | None = None, params_json: str = "{}", code_version: str = "",
               environment: Mapping[str, str] | None = None, duration_s: float | None = None,
               artifact_uris: Mapping[str, str] | None = None, failure_reason: str | None = None,
               final: bool = True) -> TrainingRunUpdated:
    """A TrainingRunUpdated value for ``job`` (see ``consumers.training.jobs.Job``); the run's identity comes
    from the job, what the update says from the keywords (each a schema field, so mypy checks the callers)."""
    return {
        "header": child_header(PRODUCER, job.parent, event_id=eid),
        "run_id": job.run_id, "attempt": int(attempt), "status": status,
        "dataset_name": job.dataset_name, "dataset_version": job.dataset_version or "",
        "model_name": job.model_name, "epoch": epoch, "metrics": numeric_map(metrics or {}),
        "params_json": params_json, "seed": job.spec.seed if job.spec is not None else 0,
        "code_version": code_version, "environment": dict(environment or {}), "duration_s": duration_s,
        "artifact_uris": dict(artifact_uris or {}), "failure_reason": failure_reason, "search_id": job.search_id,
        "trial_number": job.trial_number, "request_id": job.request_id, "final": final,
    }


def answer(finished: Mapping[str, Any], job: Any) -> TrainingRunUpdated:
    """The stored ``finished`` event of a done run, re-addressed to another request for the same run."""
    value = cast(TrainingRunUpdated, dict(finished))   # what run_update built, read back from the run ledger
    value["header"] = child_header(PRODUCER, job.parent, event_id=event_id(job.run_id, "finished", job.trigger_id))
    value["request_id"], value["search_id"], value["trial_number"] = job.request_id, job.search_id, job.trial_number
    return value


def model_registered(job: Any, result: Any, *, version: int, artifact_uri: str, report_uri: str | None,
                     signature: Mapping[str, Any]) -> ModelRegistered:
    """The ModelRegistered value of a finished run (``result``: ``trainer.run.TrainResult``)."""
    return {
        "header": child_header(PRODUCER, job.parent, event_id=registered_event_id(job.run_id)),
        "model_name": job.model_name, "model_version": int(version), "run_id": job.run_id,
        "dataset_name": job.dataset_name, "dataset_version": job.dataset_version,
        "artifact_uri": artifact_uri, "checksum": result.checksum, "task": result.task,
        "primary_metric": result.primary_metric, "higher_is_better": bool(result.higher_is_better),
        "metrics": numeric_map(result.metrics),
        "baseline_metrics": {str(k): numeric_map(v) for k, v in result.baseline_metrics.items()},
        "slice_metrics": [{"column": s["column"], "value": s["value"], "count": int(s["count"]),
                           "metrics": numeric_map(s["metrics"])} for s in result.slice_metrics],
        "reference_stats": list(result.reference_stats),
        "signature_json": json.dumps(signature, sort_keys=True),
        "labels": [str(x) for x in result.labels],
        "params_json": json.dumps(result.params, sort_keys=True, default=str),
        "code_version": result.code_version,
        "report_uri": report_uri,
        "test_predictions_uri": (f"{artifact_uri.rstrip('/')}/{result.files['test_predictions']}"
                                 if "test_predictions" in result.files else None),
        "behaviour_tests": list(getattr(result, "behaviour_tests", ())),   # trainer.behaviour builds them
        "calibration": getattr(result, "calibration", None),                 # trainer.calibration
    }


def final_metrics(result: Any) -> dict[str, float]:
    """What a ``finished`` update carries: test_* and baseline_* plus the validation summary of the run."""
    out = dict(result.final_metrics())
    val = [h["val_loss"] for h in result.history if math.isfinite(h.get("val_loss", math.nan))]
    if val:
        out["best_val_loss"] = min(val)
    out.update(best_epoch=result.best_epoch, epochs_run=result.epochs_run,
               resumed_from_epoch=result.resumed_from_epoch, train_evaluate_s=result.duration_s)
    return numeric_map(out)
