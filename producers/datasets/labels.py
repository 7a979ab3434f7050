"""The label: its classes, the task they imply, and the rules a trainable label must meet.

Task inference when the spec leaves it out: text or boolean labels are
classification (2 classes: binary, more: multiclass); integer-valued numbers with
at most ``MAX_INFERRED_CLASSES`` distinct values are classification too; any other
number is regression.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from producers.datasets.report import IssueCollector
from producers.datasets.spec import DatasetSpec

MAX_CLASSES = 1000
MAX_INFERRED_CLASSES = 20


class LabelTracker:
    def __init__(self, spec: DatasetSpec, dtype: pa.DataType | None):
        self.spec, self.dtype = spec, dtype
        self.counts: Counter = Counter()
        self.overflow = False
        self.integral = True
        self.numeric = dtype is not None and (pa.types.is_integer(dtype) or pa.types.is_floating(dtype))

    def update(self, arr: pa.Array) -> None:
        valid = arr.drop_null() if arr.null_count else arr
        if not len(valid):
            return
        if self.dtype is not None and pa.types.is_floating(self.dtype) and self.integral:
            x = valid.to_numpy(zero_copy_only=False)
            fin = x[np.isfinite(x)]
            self.integral = bool(np.all(fin == np.floor(fin)))
        if self.overflow:
            return
        vc = pc.value_counts(valid)
        for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
            self.counts[v] += n
        if len(self.counts) > MAX_CLASSES:
            self.overflow = True
            self.counts.clear()

    def infer_task(self) -> str:
        if self.spec.task:
            return self.spec.task
        n = len(self.counts)
        if not self.numeric:
            return "binary" if n <= 2 else "multiclass"
        if not self.overflow and self.integral and n <= MAX_INFERRED_CLASSES:
            return "binary" if n <= 2 else "multiclass"
        return "regression"

    def finish(self, out: IssueCollector) -> dict[str, Any]:
        label, task = self.spec.label, self.infer_task()
        classes = sorted(self.counts.items(), key=lambda kv: (str(type(kv[0])), kv[0]))
        n = len(classes)
        shown = ", ".join(f"{v!r} ({c})" for v, c in classes[:10]) + (", ..." if n > 10 else "")
        if task == "regression":
            if not self.overflow and n == 1:
                out.add("failure", label, "label_classes", f"label {label!r} is constant ({shown}); "
                        "there is nothing to learn")
            return {"task": task, "classes": []}
        if self.overflow:
            out.add("failure", label, "label_classes", f"label {label!r} has more than {MAX_CLASSES} distinct values; "
                    "too many classes for classification (declare task=regression if it is a quantity)")
            return {"task": task, "classes": []}
        if self.numeric and not self.integral:
            out.add("failure", label, "label_kind", f"{task} label {label!r} holds fractional numbers; "
                    "use task=regression or class names")
        if n == 1:
            out.add("failure", label, "label_classes", f"label {label!r} has a single class {shown}; "
                    "a model cannot learn from one class")
        elif task == "binary" and n != 2:
            out.add("failure", label, "label_classes", f"binary task needs exactly 2 classes, label {label!r} has "
                    f"{n}: {shown}")
        elif task == "multiclass" and n == 2:
            out.add("warning", label, "label_classes", f"multiclass task with only 2 classes in {label!r}; "
                    "binary gives binary metrics")
        if n >= 2:
            counts = [c for _, c in classes]
            lo, hi = min(counts), max(counts)
            if hi and lo / hi < self.spec.imbalance_ratio:
                total = sum(counts)
                minority = min(classes, key=lambda kv: kv[1])
                majority = max(classes, key=lambda kv: kv[1])
                out.add("warning", label, "class_balance",
                        f"heavy class imbalance in {label!r}: {minority[0]!r} {minority[1]} rows "
                        f"({minority[1] / total:.1%}) vs {majority[0]!r} {majority[1]} ({majority[1] / total:.1%})")
        return {"task": task, "classes": [{"value": _jsonable(v), "count": int(c)} for v, c in classes]}


def _jsonable(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
