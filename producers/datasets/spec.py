"""What a dataset is for: the user's declaration, validated before any byte is read.

Column roles (decided here once, so trainers, the metadata sink and the CLI agree):

* ``label`` is the target and never a feature.
* ``time_column`` is never a feature (a model keyed on the clock does not generalise);
  splits use it instead.
* ``exclude`` columns (ids, free text) are stored but not used as features.
* ``slice_by`` columns ARE features unless excluded or ``features`` is given
  explicitly: a segment such as ``region`` is usually predictive, and evaluating
  per slice of an input is the common case.
* ``features`` left empty means every other column.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from producers.errors import InvalidNameError, InvalidSpecError

Task = Literal["binary", "multiclass", "regression"]

DATASET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
# Column names end up in Triton input names, ClickHouse rows, report file names and shell
# commands; allow what real CSV headers use and nothing that can escape a path or a quote.
COLUMN_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .()%#+:@-]{0,127}\Z")
DEFAULT_LABEL = "label"
IMAGE_COLUMN = "image"


def check_dataset_name(name: Any, what: str = "dataset") -> str:
    """Refuse dataset (or model: ``what``) names that could escape a storage key or a topic key."""
    if not isinstance(name, str) or not DATASET_NAME_RE.match(name):
        shown = repr(name) if len(str(name)) <= 80 else repr(str(name)[:80]) + "..."
        raise InvalidNameError(
            f"invalid {what} name {shown}: use 1-64 characters [a-z0-9_-], starting with a letter or digit"
        )
    return name


def check_column_name(name: Any) -> str:
    """Refuse column names that are empty, too long, reserved ('__x'), or carry path/quote/control chars."""
    if not isinstance(name, str):
        raise InvalidNameError(f"invalid column name {name!r}: column names must be strings")
    shown = repr(name) if len(name) <= 80 else repr(name[:80]) + "..."
    if name.startswith("__") or not COLUMN_NAME_RE.match(name) or name != name.strip():
        raise InvalidNameError(
            f"invalid column name {shown}: use 1-128 characters of letters, digits, space and _ .()%#+:@- "
            "(starting with a letter, digit or single '_'; no slashes, quotes or control characters)"
        )
    return name


class Expectation(BaseModel):
    """A user-declared rule for one column; every violated rule is reported with examples."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    min: float | None = Field(None, description="Smallest allowed value (inclusive).")
    max: float | None = Field(None, description="Largest allowed value (inclusive).")
    allowed: tuple[str | int | float | bool, ...] | None = Field(None, description="The only values allowed.")
    not_null: bool = Field(False, description="No missing values.")
    unique: bool = Field(False, description="No value appears twice (across the whole dataset).")
    pattern: str | None = Field(None, description="Regular expression every string value must fully match.")

    @field_validator("column")
    @classmethod
    def _column(cls, v: str) -> str:
        return check_column_name(v)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {v!r}: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _range(self) -> Expectation:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"expectation on {self.column!r}: min {self.min} > max {self.max}")
        return self

    @classmethod
    def parse(cls, text: str) -> Expectation:
        """Build from the CLI form ``col:rule[=arg]``: ``age:range=0..120``, ``region:allowed=eu,us``,
        ``id:unique``, ``age:not_null``, ``code:pattern=[A-Z]{3}``, ``x:min=0``, ``x:max=1``."""
        col, sep, rule = text.rpartition(":")
        if not sep or not col:
            raise ValueError(f"expectation {text!r}: expected COLUMN:RULE[=ARG]")
        kind, _, arg = rule.partition("=")
        kind = kind.strip().lower().replace("-", "_")
        try:
            if kind == "range":
                lo, _, hi = arg.partition("..")
                return cls(column=col, min=float(lo) if lo else None, max=float(hi) if hi else None)
            if kind in ("min", "max"):
                return cls(column=col, **{kind: float(arg)})
            if kind == "allowed":
                return cls(column=col, allowed=tuple(v.strip() for v in arg.split(",") if v.strip()))
            if kind in ("not_null", "unique"):
                return cls(column=col, **{kind: True})
            if kind == "pattern":
                return cls(column=col, pattern=arg)
        except ValidationError as exc:
            raise ValueError(f"expectation {text!r}: {exc.errors()[0]['msg']}") from exc
        raise ValueError(f"expectation {text!r}: unknown rule {kind!r} (range, min, max, allowed, not_null, "
                         "unique, pattern)")


class DatasetSpec(BaseModel):
    """How to read, check and use one dataset; immutable, stored with every version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Dataset name: 1-64 chars [a-z0-9_-].")
    label: str = Field(DEFAULT_LABEL, description="Target column.")
    task: Task | None = Field(None, description="binary, multiclass or regression; inferred from the label when None.")
    features: tuple[str, ...] = Field((), description="Model inputs; empty: every column but label, time, excluded.")
    exclude: tuple[str, ...] = Field((), description="Columns kept in the data but never used as features.")
    slice_by: tuple[str, ...] = Field((), description="Columns whose values define evaluation slices.")
    time_column: str | None = Field(None, description="Timestamp column; splits are by time when set.")
    categorical: tuple[str, ...] = Field((), description="Columns to treat as categories even if they look numeric.")
    numeric: tuple[str, ...] = Field((), description="Columns that must be numeric; any other value fails validation.")
    image_shape: tuple[int, ...] | None = Field(None, description="Per-sample shape of an image column.")
    expectations: tuple[Expectation, ...] = Field((), description="User-declared checks.")
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form tags, copied to the event.")
    allow_duplicate_rows: bool = Field(True, description="Duplicate rows: a warning when True, a failure when False.")
    max_null_fraction: float = Field(0.5, ge=0, le=1, description="Above this share of nulls a column gets a warning.")
    imbalance_ratio: float = Field(
        0.1, ge=0, le=1, description="Minority/majority class ratio below which a warning is recorded."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dataset_name(v)

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        return check_column_name(v)

    @field_validator("time_column")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        return None if v is None else check_column_name(v)

    @field_validator("features", "exclude", "slice_by", "categorical", "numeric")
    @classmethod
    def _columns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            check_column_name(c)
        if len(set(v)) != len(v):
            raise ValueError(f"columns listed twice: {sorted({c for c in v if v.count(c) > 1})}")
        return v

    @field_validator("image_shape")
    @classmethod
    def _shape(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or any(d <= 0 for d in v)):
            raise ValueError(f"image_shape must be positive dimensions, got {v}")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: Mapping[str, str]) -> dict[str, str]:
        if len(v) > 64 or any(len(k) > 128 or len(str(x)) > 1024 for k, x in v.items()):
            raise ValueError("at most 64 tags, keys up to 128 and values up to 1024 characters")
        return dict(v)

    @model_validator(mode="after")
    def _roles(self) -> DatasetSpec:
        if self.label in self.features:
            raise ValueError(f"label {self.label!r} cannot also be a feature")
        if self.time_column and self.time_column in self.features:
            raise ValueError(f"time column {self.time_column!r} cannot also be a feature")
        if self.label == self.time_column:
            raise ValueError("label and time column must differ")
        both = set(self.categorical) & set(self.numeric)
        if both:
            raise ValueError(f"columns declared both categorical and numeric: {sorted(both)}")
        return self

    def feature_columns(self, columns: list[str]) -> list[str]:
        """The model inputs among the data's ``columns``, in the data's column order."""
        if self.features:
            return list(self.features)
        skip = {self.label, self.time_column, *self.exclude}
        return [c for c in columns if c not in skip]

    def required_columns(self) -> list[str]:
        """Columns that must be present, in declaration order without repeats."""
        cols = [self.label, *self.features, *self.slice_by, *self.categorical, *self.numeric,
                *(e.column for e in self.expectations)]
        if self.time_column:
            cols.append(self.time_column)
        return list(dict.fromkeys(cols))

    def semantics(self) -> dict[str, Any]:
        """The fields that change what a version means; two pushes of the same data must agree on them."""
        return self.model_dump(mode="json", exclude={"tags", "name"})


def build_spec(spec: DatasetSpec | Mapping[str, Any] | None = None, **fields: Any) -> DatasetSpec:
    """A spec from an instance, a mapping and/or keyword fields (None fields are ignored).

    Raises InvalidNameError for hostile names and InvalidSpecError for anything else, in one line.
    """
    base = spec.model_dump() if isinstance(spec, DatasetSpec) else dict(spec or {})
    base.update({k: v for k, v in fields.items() if v is not None})
    try:
        return DatasetSpec(**base)
    except ValidationError as exc:  # InvalidNameError from a validator propagates unwrapped
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()]
        raise InvalidSpecError("invalid dataset spec: " + "; ".join(parts)) from None
