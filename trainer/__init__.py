"""Training library: data in, evaluated TorchScript model with preprocessing out.

No Kafka, CLI or consumer code lives here; those call ``train_and_evaluate``.
Names are imported lazily so that light users (DDP workers, the stats helper)
do not pay for matplotlib and scikit-learn imports.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainingSpec": "trainer.spec", "DatasetInfo": "trainer.spec", "make_run_id": "trainer.spec",
    "train_and_evaluate": "trainer.run", "TrainResult": "trainer.run",
    "column_stats": "trainer.stats",
    "load_signature": "trainer.export", "load_exported": "trainer.export", "predict_columns": "trainer.export",
    "set_model_version": "trainer.export",
    "TrainerError": "trainer.errors", "TrainingCheckError": "trainer.errors",
    "NonFiniteLossError": "trainer.errors", "CheckpointError": "trainer.errors",
    "TrainingStopped": "trainer.errors", "ExportError": "trainer.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
