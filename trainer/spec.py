"""What to train (``TrainingSpec``) and on what (``DatasetInfo``).

Both are frozen pydantic models so that they travel as JSON in events
(``TrainingRequested.spec_json``, ``DatasetCreated``) and hash stably: the run id
of a logical run derives from the dataset version and ``spec_hash()``, so the
same request seen twice maps to the same run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainer import defaults as D
from trainer.behaviour import BehaviouralTest
from trainer.errors import TrainerError

Task = Literal["binary", "multiclass", "regression"]


class TrainingSpec(BaseModel):
    """Hyperparameters and run options of one training run.

    Unknown keys are rejected so that a typo in a request fails loudly instead of
    silently training with defaults.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Literal["mlp", "cnn", "auto"] = Field("auto", description="Network; auto: cnn for images, mlp otherwise.")
    hidden_sizes: tuple[int, ...] = Field(D.HIDDEN, description="Hidden layer widths of the MLP / CNN head.")
    cnn_channels: tuple[int, ...] = Field((16, 32), description="Channels of the CNN's conv blocks.")
    embedding_dim: int | None = Field(None, ge=1, description="Embedding width of categoricals; None: by cardinality.")
    dropout: float = Field(D.DROPOUT, ge=0.0, lt=1.0)
    epochs: Annotated[int, Field(ge=1, le=10_000)] | Literal["auto"] = Field(D.AUTO,
                                          description="Maximum epochs; auto: from the row count (trainer.defaults).")
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        D.AUTO, description="Rows per step and per process (DDP); auto: from the row count.")
    lr: Annotated[float, Field(gt=0.0)] | Literal["auto"] = Field(
        D.AUTO, description=f"Peak learning rate; auto: {D.LR:g}.")
    weight_decay: float = Field(D.WEIGHT_DECAY, ge=0.0)
    lr_schedule: Literal["onecycle", "cosine", "constant"] = Field(
        "onecycle", description="onecycle: warmup then cosine decay; cosine: decay only; constant.")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Max gradient norm; None: no clipping.")
    early_stopping_patience: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        D.AUTO, description="Epochs without validation-loss improvement before stopping (best weights are "
        "restored); auto: an eighth of the epochs; None: never."
    )
    time_budget_s: float | None = Field(D.TIME_BUDGET_S, gt=0.0, description="Wall-clock seconds for all training "
                                        "of the run (candidate and search); None: no limit.")
    search_trials: Annotated[int, Field(ge=0, le=100)] | Literal["auto"] = Field(
        D.AUTO, description="Trials of the automatic search run when the first candidate does not "
        "beat the baselines on validation; auto: trainer.defaults.SEARCH_TRIALS when epochs, batch_size and lr "
        "are all auto, else 0 (and 0 in a search's trials, which do not register a model).")
    ensemble: Annotated[int, Field(ge=1, le=20)] | Literal["auto"] = Field(
        D.AUTO, description="Networks trained from consecutive seeds and averaged into the served model; auto: "
        "trainer.defaults.ENSEMBLE_SIZE when epochs, batch_size and lr are all auto (tabular, one process), else 1.")
    seed: int = Field(0, ge=0, lt=2**31)
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    world_size: int = Field(1, ge=1, le=64, description="Processes of distributed data-parallel training.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="Mixed precision on CUDA (ignored on CPU).")
    model_name: str | None = Field(None, description="Registered model name; None: the dataset name.")
    min_rows: int = Field(30, ge=3, description="Fewer rows than this fail the run.")
    min_rows_per_class: int = Field(5, ge=1, description="Classes with fewer rows fail the run.")
    min_slice_rows: int = Field(10, ge=1, description="Slices with fewer test rows get counts only, no metrics.")
    check_leakage: bool = Field(True, description="Fail when a feature alone perfectly predicts the label.")
    register_model: bool = Field(True, description="Register the model (ModelRegistered); search trials set false.")
    behaviour_tests: tuple[BehaviouralTest, ...] = Field(
        (), description="Behavioural tests run on the exported model (trainer/behaviour.py); a failed one rejects.")

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> TrainingSpec:
        if self.val_fraction + self.test_fraction > 0.8:
            raise ValueError("val_fraction + test_fraction must leave at least 20% of rows for training")
        if any(h < 1 for h in self.hidden_sizes) or any(c < 1 for c in self.cnn_channels):
            raise ValueError("hidden_sizes and cnn_channels must be positive")
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    # The budget of a resolved spec (``resolved``), or one that set it: a number, never "auto".
    @property
    def resolved_epochs(self) -> int:
        return self._set("epochs")

    @property
    def resolved_batch_size(self) -> int:
        return self._set("batch_size")

    @property
    def resolved_lr(self) -> float:
        return self._set("lr")

    @property
    def resolved_ensemble(self) -> int:
        return self._set("ensemble")

    def _set(self, name: str) -> Any:
        value = getattr(self, name)
        if value == D.AUTO:
            raise TrainerError(f"training spec: {name} is still auto here (resolve the spec first)")
        return value

    def resolved(self, n_train: int) -> TrainingSpec:
        """This spec with every ``auto`` replaced by the budget rules of ``trainer.defaults``."""
        b = D.budget(n_train, batch=None if self.batch_size == D.AUTO else self.resolved_batch_size,
                     n_epochs=None if self.epochs == D.AUTO else self.resolved_epochs)
        untouched = all(v == D.AUTO for v in (self.epochs, self.batch_size, self.lr))
        update: dict[str, Any] = {"batch_size": b["batch_size"], "epochs": b["epochs"],
                                  "lr": D.LR if self.lr == D.AUTO else self.lr}
        if self.early_stopping_patience == D.AUTO:
            update["early_stopping_patience"] = b["early_stopping_patience"]
        if self.ensemble == D.AUTO:
            update["ensemble"] = D.ENSEMBLE_SIZE if untouched and self.register_model and self.world_size == 1 else 1
        if self.search_trials == D.AUTO:
            update["search_trials"] = D.SEARCH_TRIALS if untouched and self.register_model else 0  # not in trials
        return self.model_copy(update=update)

    @classmethod
    def from_json(cls, text: str | bytes) -> TrainingSpec:
        """Parse a spec; a malformed one raises ``TrainerError`` naming the bad fields."""
        try:
            return cls.model_validate_json(text or "{}")
        except ValidationError as exc:
            raise TrainerError(f"invalid training spec: {_errors(exc)}") from exc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSpec:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise TrainerError(f"invalid training spec: {_errors(exc)}") from exc

    def spec_hash(self) -> str:
        """Hex digest identifying the spec.

        Only fields that differ from their defaults enter the hash, so adding a
        new field with a default later does not change the ids of existing runs.
        """
        payload = json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True,
                             separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class DatasetInfo(BaseModel):
    """How to read a dataset: task, label, inputs, slices and time order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task
    label_column: str
    feature_columns: tuple[str, ...] = Field(..., min_length=1)
    slice_columns: tuple[str, ...] = ()
    time_column: str | None = None
    image_shape: tuple[int, ...] = Field((), description="Per-sample shape of image arrays; empty for tabular.")
    name: str = "dataset"
    version: str = ""

    @field_validator("image_shape")
    @classmethod
    def _image_shape_is_2d_or_3d(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if v and (len(v) not in (2, 3) or any(d < 1 for d in v)):
            raise ValueError("image_shape must be [H, W] or [C, H, W] with positive sizes")
        return v

    @model_validator(mode="after")
    def _columns_are_consistent(self) -> DatasetInfo:
        if self.label_column in self.feature_columns:
            raise ValueError(f"label column {self.label_column!r} is also listed as a feature")
        if len(set(self.feature_columns)) != len(self.feature_columns):
            raise ValueError("feature_columns has duplicates")
        if self.image_shape and len(self.feature_columns) != 1:
            raise ValueError("an image dataset has exactly one feature column (the image arrays)")
        return self

    @property
    def is_image(self) -> bool:
        return bool(self.image_shape)

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> DatasetInfo:
        """Build from a decoded ``DatasetCreated`` value; a bad one raises ``TrainerError``."""
        try:
            return cls(
                task=event["task"], label_column=event["label_column"],
                feature_columns=tuple(event["feature_columns"]),
                slice_columns=tuple(event.get("slice_columns") or ()),
                time_column=event.get("time_column"), image_shape=tuple(event.get("image_shape") or ()),
                name=event["name"], version=event["version"],
            )
        except (KeyError, TypeError) as exc:
            raise TrainerError(f"DatasetCreated event lacks a field: {exc}") from exc
        except ValidationError as exc:
            raise TrainerError(f"invalid dataset description: {_errors(exc)}") from exc


def check_request_spec(spec: Mapping[str, Any] | BaseModel | str | None) -> dict[str, Any]:
    """A training request's spec as a dict, refused (``TrainerError``) unless ``TrainingSpec`` accepts it.

    The one check the CLI and the SDK run before a ``TrainingRequested`` is
    published, so an unknown key or a bad value fails the caller at once instead
    of failing a run in a consumer minutes later.
    """
    if spec is None:
        return {}
    if isinstance(spec, BaseModel):
        doc: Any = spec.model_dump(mode="json")
    elif isinstance(spec, (str, bytes)):
        try:
            doc = json.loads(spec or "{}")
        except ValueError as exc:
            raise TrainerError(f"invalid training spec: not JSON ({exc})") from exc
    else:
        doc = spec
    if not isinstance(doc, Mapping):
        raise TrainerError("invalid training spec: expected an object of TrainingSpec fields, "
                           f"got {type(doc).__name__}")
    doc = dict(doc)
    TrainingSpec.from_dict(doc)
    return doc


def make_run_id(info: DatasetInfo, spec: TrainingSpec) -> str:
    """Deterministic id of the logical run (dataset name and version, spec)."""
    digest = hashlib.sha256(f"{info.name}\0{info.version}\0{spec.spec_hash()}".encode()).hexdigest()[:16]
    return f"{info.name}-{digest}"


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors())
