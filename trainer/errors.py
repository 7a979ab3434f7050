"""Error tree of the trainer.

Every failure a user can fix (bad data, bad spec, diverging training) is a
``TrainerError`` whose message is shown as is; the training consumer maps
``TrainingCheckError`` to a failed run that is not retried, while other errors
may be retried.
"""

from __future__ import annotations

from infra.errors import ModelBusError


class TrainerError(ModelBusError):
    """Training could not produce a model; the message says why."""


class TrainingCheckError(TrainerError):
    """The data fails a training-time check (leakage, too few rows, constant features)."""


class NonFiniteLossError(TrainerError):
    """The loss became NaN or infinite; the run cannot recover by itself."""


class CheckpointError(TrainerError):
    """A checkpoint could not be written or read."""


class TrainingStopped(TrainerError):
    """``should_stop()`` asked training to stop; the last checkpoint allows a resume."""


class ExportError(TrainerError):
    """The model could not be exported, or an exported artifact is malformed."""
