"""The default training budget and model: the one place where "no spec" becomes numbers.

A push with no training spec must still give a model worth deploying, so every
``"auto"`` field of ``TrainingSpec`` is resolved here from the size of the
training split. The rules, and why:

* **Batch size** grows with the data (about ``n_train / 16``, a power of two in
  ``[32, 512]``): small sets get many noisy steps per epoch (regularising),
  large sets get throughput.
* **Step budget**: about ``TARGET_STEPS`` optimizer steps, as epochs in
  ``[MIN_EPOCHS, MAX_EPOCHS]``. A few hundred rows need hundreds of epochs to
  converge with small batches; fifty thousand rows converge in a few dozen.
* **Early stopping** on the validation loss with a patience of an eighth of the
  epochs (in ``[MIN_PATIENCE, MAX_PATIENCE]``); the best-validation weights are
  restored, so the long budget costs time but never quality.
* **Schedule**: one cycle (linear warmup over ``WARMUP_FRACTION`` of the steps,
  then cosine decay) at peak ``LR``. The warmup keeps the first steps of a tiny
  set from overshooting; the decay settles large sets.
* **Wall clock**: ``TIME_BUDGET_S`` for all training of a run (first candidate
  and search). A fit that reaches its share stops like an early stop, with the
  best weights so far.
* **Search**: when the first candidate does not beat every baseline on the
  *validation* split (the test split is never looked at) and is not already at
  the metric's ceiling (a score of 1 cannot be beaten), up to
  ``SEARCH_TRIALS`` Optuna TPE trials over ``search_space`` run in the time that
  is left, and the candidate with the best validation metric is kept.

* **Ensemble**: the chosen configuration is trained ``ENSEMBLE_SIZE`` times
  from consecutive seeds and the members' probabilities (or predictions) are
  averaged (``trainer.models.SeedEnsemble``). On small data the seed alone
  moves a network's test metric by several points; five members removed most
  of that spread and improved the mean single network on six of the eight
  quality-suite datasets (equal on the other two), at five times the training
  time, which is seconds there. Members after the first share what is left of
  ``TIME_BUDGET_S``; a member that would start after the deadline is not
  trained, so a slow machine gets a smaller ensemble, never a late run.
  Tabular networks on one process only (an image CNN or a DDP run trains one).

* **Class weights** (multiclass only): the primary metric is macro-F1, which
  counts every class equally, while plain cross-entropy lets a model that never
  predicts a rare class score well. Each class's loss is weighted by
  ``(n / n_class) ** CLASS_WEIGHT_POWER``, normalised so the average row weight
  is 1. The square root is the usual compromise between no weighting and full
  inverse frequency (which over-predicts rare classes); on seattle_weather
  (five classes, 2 % snow) it moved the test macro-F1 of five seeds from
  0.34-0.40 to 0.40-0.46 (bench quality suite). Binary tasks are judged by
  ROC AUC, which weighting cannot improve, so they are left unweighted and
  their probabilities stay calibrated.

Architecture (an MLP on standardised numerics, mean-imputed from the training
split, plus categorical embeddings; ``HIDDEN``, ``DROPOUT``, ``WEIGHT_DECAY``) is
the usual strong default for tabular data; its width was chosen by cross-validation
on several small real datasets, not on the benchmark's test rows.
"""

from __future__ import annotations

import math
from typing import Any, Final

AUTO: Final = "auto"
HIDDEN = (256, 128)
DROPOUT = 0.1
WEIGHT_DECAY = 1e-4
LR = 3e-3
WARMUP_FRACTION = 0.1
MIN_BATCH, MAX_BATCH, ROWS_PER_BATCH = 32, 512, 16
TARGET_STEPS = 3000
MIN_EPOCHS, MAX_EPOCHS = 10, 300
MIN_PATIENCE, MAX_PATIENCE = 8, 30
TIME_BUDGET_S = 45.0  # leaves room for baselines, evaluation and export inside a minute on 2 cores
SEARCH_TRIALS = 6
ENSEMBLE_SIZE = 5
CLASS_WEIGHT_POWER = 0.5
SEARCH_SEED = 0


def batch_size(n_train: int) -> int:
    want = max(1, n_train // ROWS_PER_BATCH)
    return int(min(MAX_BATCH, max(MIN_BATCH, 2 ** round(math.log2(want)))))


def epochs(n_train: int, batch: int) -> int:
    steps_per_epoch = max(1, math.ceil(n_train / batch))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch))))


def patience(n_epochs: int) -> int:
    return int(min(MAX_PATIENCE, max(MIN_PATIENCE, n_epochs // 8)))


def budget(n_train: int, *, batch: int | None = None, n_epochs: int | None = None) -> dict[str, Any]:
    """Concrete batch size, epochs and patience for ``n_train`` rows (given values are kept)."""
    b = batch or batch_size(n_train)
    e = n_epochs or epochs(n_train, b)
    return {"batch_size": b, "epochs": e, "early_stopping_patience": patience(e)}


def class_weights(task: str, counts: list[int]) -> list[float] | None:
    """Per-class loss weights for a task, from the training split's class counts (None: unweighted)."""
    if task != "multiclass" or len(counts) < 2:
        return None
    total = sum(counts)
    raw = [(total / max(c, 1)) ** CLASS_WEIGHT_POWER for c in counts]
    mean_row = sum(w * c for w, c in zip(raw, counts)) / total
    return [w / mean_row for w in raw]


def search_space(n_train: int) -> dict[str, tuple]:
    """What the automatic search varies: ``name -> (kind, low, high)`` or ``("choice", options)``."""
    return {
        "lr": ("log", 3e-4, 1e-2),
        "weight_decay": ("log", 1e-6, 1e-2),
        "dropout": ("float", 0.0, 0.4),
        "hidden_sizes": ("choice", [(128,), (256, 128), (512, 256), (256, 256, 128)]),
        "batch_size": ("choice", sorted({max(MIN_BATCH, batch_size(n_train) // 2), batch_size(n_train),
                                         min(MAX_BATCH * 2, batch_size(n_train) * 2)})),
    }
