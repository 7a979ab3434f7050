"""Checks run before anything is stored: structure first, then every block, then whole-dataset rules.

* Structure (names, types, required columns) is checked on the schema; a dataset
  with a broken structure is refused right away, every structural finding listed.
* Row rules run per block through a pandera ``DataFrameSchema`` built from the spec
  and the canonical types (nulls, finite numbers, numeric-required columns, user
  ranges / allowed values / patterns), so a file larger than memory is checked with
  bounded memory; findings are merged across blocks with global row numbers.
* Dataset rules (row count, label classes and task, all-null columns, duplicates,
  uniqueness, columns that look numeric but hold words, imbalance) run at the end
  on counters and hashes gathered while streaming.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import pandas as pd
import pandera.pandas as pdr
import pyarrow as pa
import pyarrow.compute as pc

from producers.datasets import labels
from producers.datasets.canonical import is_image
from producers.datasets.hashing import RepeatTracker, RowHasher
from producers.datasets.report import IssueCollector, Severity, ValidationReport
from producers.datasets.spec import DatasetSpec, check_column_name
from producers.errors import InvalidNameError

MIXED_NUMERIC_SHARE = 0.8     # a text column this numeric is taken to be a numeric column with bad values
HIGH_CARDINALITY_SLICES = 1000
Lookup = Callable[[str, list[int]], list[Any]]


def check_structure(spec: DatasetSpec, input_schema: pa.Schema, canonical: pa.Schema,
                    unsupported: dict[str, str]) -> IssueCollector:
    """Findings that make row checks meaningless: bad names, unsupported types, missing columns."""
    out = IssueCollector()
    names = input_schema.names
    for name in dict.fromkeys(names):
        try:
            check_column_name(name)
        except InvalidNameError as exc:
            out.add("failure", str(name)[:80], "column_name", str(exc))
        if names.count(name) > 1:
            out.add("failure", str(name)[:80], "duplicate_column", f"column {name!r} appears {names.count(name)} times")
    for name, t in unsupported.items():
        out.add("failure", name, "supported_type", f"column {name!r} has type {t}; supported: numbers, booleans, "
                "text, dates/timestamps and fixed-size numeric arrays (images)")
    present = set(names)
    roles = {spec.label: "label column"}
    roles.update({c: "feature column" for c in spec.features})
    roles.update({c: "slice column" for c in spec.slice_by})
    if spec.time_column:
        roles[spec.time_column] = "time column"
    for col in spec.required_columns():
        if col not in present:
            role = roles.get(col, "column named in the spec")
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            out.add("failure", col, "column_present", f"{role} {col!r} not found (columns: {shown})")
    types = {f.name: f.type for f in canonical}
    images = [n for n, t in types.items() if is_image(t)]
    if len(images) > 1:
        out.add("failure", None, "one_image_column", f"{len(images)} image columns ({', '.join(images)}); one allowed")
    for n in images:
        if spec.image_shape and int(np.prod(spec.image_shape)) != types[n].list_size:
            out.add("failure", n, "image_shape", f"image_shape {list(spec.image_shape)} does not hold "
                    f"{types[n].list_size} values per row")
    lt = types.get(spec.label)
    if lt is not None and (is_image(lt) or pa.types.is_timestamp(lt)):
        out.add("failure", spec.label, "label_kind", f"label {spec.label!r} is {lt}; a label is a number or a class")
    if lt is not None and spec.task == "regression" and pa.types.is_boolean(lt):
        out.add("failure", spec.label, "numeric_label", f"regression label {spec.label!r} is boolean, not numeric")
    tt = types.get(spec.time_column) if spec.time_column else None
    if tt is not None and not pa.types.is_timestamp(tt):
        out.add("failure", spec.time_column, "timestamp_type", f"time column {spec.time_column!r} holds {tt}, not "
                "timestamps (ISO 8601 values such as 2024-01-31 or 2024-01-31 12:00:00 are recognised)")
    for col in _numeric_required(spec):
        ct = types.get(col)
        if ct is not None and not (pa.types.is_integer(ct) or pa.types.is_floating(ct) or pa.types.is_string(ct)):
            out.add("failure", col, "numeric", f"column {col!r} must be numeric but holds {ct}")
    for e in spec.expectations:
        ct = types.get(e.column)
        if e.pattern and ct is not None and not pa.types.is_string(ct):
            out.add("failure", e.column, "pattern", f"pattern rule on {e.column!r}, which holds {ct}, not text")
    return out


def _numeric_required(spec: DatasetSpec) -> list[str]:
    cols = list(spec.numeric)
    cols += [e.column for e in spec.expectations if e.min is not None or e.max is not None]
    if spec.task == "regression":
        cols.append(spec.label)
    return list(dict.fromkeys(cols))


def _is_numeric_text(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s.astype(object), errors="coerce").notna() | s.isna()


def _text_range(lo: float | None, hi: float | None) -> pdr.Check:
    """Range rule on a text column that should be numeric: judge the numbers, leave words to 'numeric'."""
    def ok(s: pd.Series) -> pd.Series:
        x = pd.to_numeric(s.astype(object), errors="coerce")
        bad = (x < lo if lo is not None else False) | (x > hi if hi is not None else False)
        assert isinstance(bad, pd.Series)   # at least one bound is set, so one side is a Series
        return ~bad.fillna(False).astype(bool)

    name = f"in_range({lo}, {hi})" if lo is not None and hi is not None else \
        (f"greater_than_or_equal_to({lo})" if lo is not None else f"less_than_or_equal_to({hi})")
    return pdr.Check(ok, name=name)


def _coerce_allowed(values: tuple, t: pa.DataType) -> list:
    out = []
    for v in values:
        try:
            if pa.types.is_integer(t) and not isinstance(v, bool):
                v = int(float(v))
            elif pa.types.is_floating(t):
                v = float(v)
            elif pa.types.is_boolean(t) and isinstance(v, str):
                v = {"true": True, "false": False, "1": True, "0": False}.get(v.lower(), v)
            elif pa.types.is_string(t):
                v = str(v)
        except (TypeError, ValueError):
            pass
        out.append(v)
    return out


class Validator:
    """Row and dataset checks over a stream of canonical batches."""

    def __init__(self, spec: DatasetSpec, schema: pa.Schema, issues: IssueCollector | None = None):
        self.spec, self.schema = spec, schema
        self.issues = issues or IssueCollector()
        self.types = {f.name: f.type for f in schema}
        self.rows = 0
        self.pandera_schema, self._checked = self._build_schema()
        self.row_hasher = RowHasher(schema)
        self.row_repeats = RepeatTracker()
        self.unique_cols = [e.column for e in spec.expectations if e.unique and e.column in self.types]
        self.unique_repeats = {c: RepeatTracker() for c in self.unique_cols}
        self.labels = labels.LabelTracker(spec, self.types.get(spec.label))
        self._mixed = {c: [0, 0] for c, t in self.types.items()
                       if pa.types.is_string(t) and c not in spec.categorical and c not in _numeric_required(spec)
                       and c != spec.label}
        self._mixed_bad: dict[str, tuple[list[str], list[int]]] = {c: ([], []) for c in self._mixed}

    def _build_schema(self) -> tuple[pdr.DataFrameSchema, list[str]]:
        """The pandera schema, and per column which rules Arrow can pre-screen (see ``_may_fail``)."""
        spec, columns = self.spec, {}
        self._screens: dict[str, dict[str, Any]] = {}
        numeric_req = set(_numeric_required(spec))
        not_null = {e.column for e in spec.expectations if e.not_null} | {spec.label}
        for name, t in self.types.items():
            if is_image(t):
                continue
            checks: list[pdr.Check] = []
            screen: dict[str, Any] = {"not_null": name in not_null, "finite": pa.types.is_floating(t),
                                      "lo": None, "hi": None, "always": False}
            if pa.types.is_floating(t):
                checks.append(pdr.Check(lambda s: ~np.isinf(s), name="finite", ignore_na=True))
            if name in numeric_req and pa.types.is_string(t):
                checks.append(pdr.Check(_is_numeric_text, name="numeric"))
                screen["always"] = True
            for e in (e for e in spec.expectations if e.column == name):
                numeric = pa.types.is_integer(t) or pa.types.is_floating(t)
                if numeric and e.min is not None:  # the tightest bound flags every block any bound would
                    screen["lo"] = e.min if screen["lo"] is None else max(screen["lo"], e.min)
                if numeric and e.max is not None:
                    screen["hi"] = e.max if screen["hi"] is None else min(screen["hi"], e.max)
                ranged = e.min is not None or e.max is not None
                screen["always"] |= e.allowed is not None or bool(e.pattern) or (ranged and not numeric)
                if not numeric and pa.types.is_string(t) and (e.min is not None or e.max is not None):
                    checks.append(_text_range(e.min, e.max))
                elif numeric and e.min is not None and e.max is not None:
                    checks.append(pdr.Check.in_range(e.min, e.max))
                elif numeric and e.min is not None:
                    checks.append(pdr.Check.ge(e.min))
                elif numeric and e.max is not None:
                    checks.append(pdr.Check.le(e.max))
                if e.allowed is not None:
                    checks.append(pdr.Check.isin(_coerce_allowed(e.allowed, t)))
                if e.pattern and pa.types.is_string(t):
                    checks.append(pdr.Check.str_matches(f"(?:{e.pattern})$"))
            if checks or name in not_null:
                columns[name] = pdr.Column(nullable=name not in not_null, checks=checks, required=False)
                self._screens[name] = screen
        return pdr.DataFrameSchema(columns, strict=False), list(columns)

    def check_block(self, batch: pa.RecordBatch, hashes: dict[str, np.ndarray] | None = None) -> None:
        """Run every row rule on one canonical batch; findings keep global row numbers.

        ``hashes``: the batch's per-column hashes (``RowHasher.column_hashes``) when already computed.
        """
        offset, n = self.rows, batch.num_rows
        self.rows += n
        if not n:
            return
        suspects = [c for c in self._checked if self._may_fail(c, batch.column(c))]
        if suspects:
            self._pandera(batch.select(suspects), offset)
        hashes = hashes if hashes is not None else self.row_hasher.column_hashes(batch)
        self.row_repeats.add(self.row_hasher.combine(hashes, n))
        for c in self.unique_cols:
            self.unique_repeats[c].add(hashes[c])
        lab = self.types.get(self.spec.label)
        if lab is not None:
            self.labels.update(batch.column(self.spec.label))
        for c in list(self._mixed):
            self._track_mixed(c, batch.column(c), offset)
        for c, t in self.types.items():
            if is_image(t):
                self._check_image(c, batch.column(c), offset)

    def _check_image(self, col: str, arr: pa.Array, offset: int) -> None:
        """Images are checked with Arrow directly: a missing image or a NaN/inf pixel fails its row."""
        if arr.null_count:
            rows = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))
            self.issues.add("failure", col, "not_null", f"image column {col!r} has missing images", rows=len(rows),
                            example_rows=(rows[:5] + offset).tolist())
        if pa.types.is_floating(arr.type.value_type):
            px = arr.flatten().to_numpy(zero_copy_only=False)
            if arr.null_count == 0 and not np.isfinite(px).all():
                bad = np.flatnonzero(~np.isfinite(px.reshape(len(arr), -1)).all(axis=1))
                self.issues.add("failure", col, "finite", f"image column {col!r} has NaN or infinite pixels",
                                rows=len(bad), example_rows=(bad[:5] + offset).tolist())

    def _may_fail(self, col: str, arr: pa.Array) -> bool:
        """Arrow's one-pass kernels clear most blocks; pandera then builds the detailed findings.

        Only rules with an exact Arrow screen (nulls, infinities, numeric bounds) are skipped
        on a clean block; any other rule always goes through pandera.
        """
        sc = self._screens[col]
        if sc["always"] or (sc["not_null"] and arr.null_count):
            return True
        if sc["finite"] and arr.null_count < len(arr) and pc.any(pc.is_inf(arr)).as_py():
            return True
        if sc["lo"] is not None or sc["hi"] is not None:
            mm = pc.min_max(arr)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            below = lo is not None and sc["lo"] is not None and lo < sc["lo"]
            above = hi is not None and sc["hi"] is not None and hi > sc["hi"]
            if below or above:
                return True
        return False

    def _pandera(self, batch: pa.RecordBatch, offset: int) -> None:
        df = batch.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_string(t) else None)
        df.index = pd.RangeIndex(offset, offset + len(df))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.pandera_schema.validate(df, lazy=True)
        except pdr.errors.SchemaErrors as exc:
            fc = exc.failure_cases
            for (col, check), grp in fc.groupby(["column", "check"], dropna=False, sort=False):
                col = None if pd.isna(col) else str(col)
                grp = grp.sort_values("index", na_position="first", kind="stable")
                rows = grp["index"].dropna().astype(int).tolist()
                examples = [] if check == "not_nullable" else grp["failure_case"].head(5).tolist()
                self.issues.add("failure", col, _rule(check), _message(col, str(check), self.spec),
                                rows=len(grp), examples=examples, example_rows=rows[:5])

    def _track_mixed(self, col: str, arr: pa.Array, offset: int) -> None:
        counts = pc.value_counts(arr.drop_null())
        if not len(counts):
            return
        values = counts.field("values").to_numpy(zero_copy_only=False)
        n = counts.field("counts").to_numpy()
        numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").notna().to_numpy()
        tally = self._mixed[col]
        tally[0] += int(n.sum())
        tally[1] += int(n[numeric].sum())
        if tally[0] >= 1000 and tally[1] < 0.5 * tally[0]:
            del self._mixed[col]  # plainly a text column; stop paying for the check
            return
        examples, rows = self._mixed_bad[col]
        if (~numeric).any() and len(examples) < 5:
            bad = values[~numeric][:5]
            examples.extend(str(v) for v in bad[: 5 - len(examples)])
            hit = pc.indices_nonzero(pc.is_in(arr, value_set=pa.array(bad, type=pa.string())))
            rows.extend(offset + int(i) for i in hit.to_numpy()[: 5 - len(rows)])

    def finish(self, stats: dict[str, dict[str, Any]], lookup: Lookup | None = None) -> tuple[ValidationReport, dict]:
        """Dataset-wide rules; returns the report and what was learned about the label."""
        spec, out = self.spec, self.issues
        if self.rows == 0:
            out.add("failure", None, "not_empty", "the dataset has no rows")
        label_info = self.labels.finish(out) if spec.label in self.types and self.rows else {}
        feature_like = set(spec.feature_columns(list(self.types))) | set(spec.slice_by)
        for name, st in stats.items():
            total = st["count"] + st["null_count"]
            if not total:
                continue
            if st["count"] == 0 and (name in feature_like or name == spec.time_column):
                out.add("failure", name, "all_null", f"column {name!r} has no values at all")
            elif name in feature_like and st["null_count"] / total > spec.max_null_fraction:
                out.add("warning", name, "null_fraction", f"column {name!r} is {st['null_count'] / total:.0%} "
                        f"missing (above {spec.max_null_fraction:.0%})")
            elif name in feature_like and st["null_count"]:
                out.add("warning", name, "has_nulls", f"column {name!r} has {st['null_count']} missing value(s) "
                        f"({st['null_count'] / total:.1%}); training imputes them with training-split statistics "
                        "and serving imputes them the same way (nan_policy 'auto')")
        for col in spec.slice_by:
            d = stats.get(col, {}).get("distinct_count") or 0
            if d > HIGH_CARDINALITY_SLICES:
                out.add("warning", col, "slice_cardinality", f"slice column {col!r} has ~{d} distinct values; "
                        "per-slice metrics will be thin")
        self._duplicates(lookup)
        for col, (total, numeric) in self._mixed.items():
            if total and numeric < total and numeric >= MIXED_NUMERIC_SHARE * total:
                ex, rows = self._mixed_bad[col]
                share = f"{numeric / total:.1%}" if numeric / total < 0.999 else "over 99.9%"
                out.add("failure", col, "numeric", f"column {col!r} is numeric in {share} of rows but "
                        "holds non-numeric values; fix them or declare the column categorical",
                        rows=total - numeric, examples=ex, example_rows=rows)
        report = ValidationReport(rows_checked=self.rows, columns=tuple(self.types), issues=out.issues())
        return report, label_info

    def _duplicates(self, lookup: Lookup | None) -> None:
        spec, out = self.spec, self.issues
        count, rows, exact = self.row_repeats.repeats()
        if count:
            sev: Severity = "warning" if spec.allow_duplicate_rows else "failure"
            about = "" if exact else " (estimated from a hash sample)"
            out.add(sev, None, "duplicate_rows", f"rows repeat an earlier row exactly{about}", rows=count,
                    example_rows=rows.tolist())
        for col, tracker in self.unique_repeats.items():
            count, rows, exact = tracker.repeats()
            if count:
                examples = lookup(col, rows.tolist()) if lookup else []
                about = "" if exact else " (count estimated from a hash sample)"
                out.add("failure", col, "unique", f"column {col!r} must be unique but values repeat{about}",
                        rows=count, examples=examples, example_rows=rows.tolist())


_RULES = {"not_nullable": "not_null", "column_in_dataframe": "column_present"}


def _rule(check: Any) -> str:
    return _RULES.get(str(check), str(check))


def _message(col: str | None, check: str, spec: DatasetSpec) -> str:
    if check == "not_nullable":
        role = "label" if col == spec.label else "column"
        return f"{role} {col!r} has missing values"
    if check == "finite":
        return f"column {col!r} has infinite values"
    if check == "numeric":
        return f"column {col!r} must be numeric but holds non-numeric values"
    if check.startswith(("in_range", "greater_than_or_equal_to", "less_than_or_equal_to")):
        return f"column {col!r} has values outside the allowed range ({check})"
    if check.startswith("isin"):
        return f"column {col!r} has values outside the allowed set"
    if check.startswith("str_matches"):
        return f"column {col!r} has values not matching the pattern"
    return f"column {col!r} failed {check}"
