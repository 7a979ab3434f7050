"""The evaluation report: plots, slice table, worst errors and report.md.

People judge a model by looking at it (confusion matrix, calibration, ROC), by
checking it beats trivial baselines and by reading the rows it gets most
wrong; this writes all of that next to the model so the report ships with the
artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import CalibrationDisplay, calibration_curve
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from trainer.evaluate import normalize_proba, per_row_loss

WORST_ROWS = 20
_MAX_CURVES = 10


@dataclass(frozen=True)
class ReportInput:
    """Everything the report shows, computed elsewhere."""

    task: str
    labels: Sequence[str]
    y_test: np.ndarray
    output: np.ndarray  # probabilities [N, K] or predictions [N]
    metrics: dict[str, float]
    baseline_metrics: dict[str, dict[str, float]]
    slices: list[dict[str, Any]]
    test_frame: pd.DataFrame  # raw test rows (features, label, slices) for the worst-errors table
    test_rows: np.ndarray  # dataset row positions of the test rows
    primary_metric: str
    higher_is_better: bool
    title: str
    facts: dict[str, Any]
    warnings: Sequence[str] = ()


def write_report(report_dir: str | Path, r: ReportInput) -> dict[str, Path]:
    """Write every report file; a plot that cannot be drawn for this data is skipped and noted."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    notes: list[str] = []
    plots = _classification_plots(r) if r.task != "regression" else _regression_plots(r)
    for name, draw in plots:
        fig, ax = plt.subplots(figsize=(6, 5))
        try:
            draw(ax)
            ax.set_title(f"{r.title}: {name.replace('_', ' ')}", fontsize=10)
            # Fixed margins: tight_layout would double the rendering cost of every plot.
            fig.subplots_adjust(left=0.15, bottom=0.18, right=0.95, top=0.92)
            files[name] = out / f"{name}.png"
            fig.savefig(files[name], dpi=90)
        except (ValueError, IndexError) as exc:
            notes.append(f"{name} plot skipped: {exc}")
        finally:
            plt.close(fig)
    files["slices"] = out / "slices.csv"
    _slice_table(r.slices).to_csv(files["slices"], index=False)
    files["worst_errors"] = out / "worst_errors.csv"
    _worst_errors(r).to_csv(files["worst_errors"], index=False)
    files["report"] = out / "report.md"
    files["report"].write_text(_markdown(r, files, notes), encoding="utf-8")
    return files


def _classification_plots(r: ReportInput):
    proba = normalize_proba(r.output)
    y, k = r.y_test, proba.shape[1]
    labels = list(r.labels)
    pred = proba.argmax(axis=1)

    def confusion(ax):
        ConfusionMatrixDisplay.from_predictions(y, pred, labels=list(range(k)), display_labels=labels, ax=ax,
                                                colorbar=False, xticks_rotation=45)

    def curves(display, ax):
        if k == 2:
            display.from_predictions(y, proba[:, 1], pos_label=1, name=labels[1], ax=ax)
            return
        for c in range(min(k, _MAX_CURVES)):
            if (y == c).any() and (y != c).any():
                display.from_predictions((y == c).astype(int), proba[:, c], name=labels[c], ax=ax)

    def calibration(ax):
        if k == 2:
            CalibrationDisplay.from_predictions(y, proba[:, 1], n_bins=10, name=labels[1], ax=ax)
            return
        frac, conf = calibration_curve((pred == y).astype(int), proba.max(axis=1), n_bins=10)
        ax.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
        ax.plot(conf, frac, "s-", label="top-label")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend()

    return [("confusion_matrix", confusion), ("roc_curve", lambda ax: curves(RocCurveDisplay, ax)),
            ("pr_curve", lambda ax: curves(PrecisionRecallDisplay, ax)), ("calibration", calibration)]


def _regression_plots(r: ReportInput):
    pred = np.asarray(r.output, dtype=np.float64).reshape(-1)
    y = r.y_test

    def scatter(ax):
        ax.scatter(y, pred, s=8, alpha=0.5)
        lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k:")
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")

    def residuals(ax):
        ax.hist(pred - y, bins=30)
        ax.set_xlabel("prediction - actual")
        ax.set_ylabel("rows")

    return [("predicted_vs_actual", scatter), ("residuals", residuals)]


def _slice_table(slices: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"column": s["column"], "value": s["value"], "count": s["count"], **s["metrics"]} for s in slices]
    return pd.DataFrame(rows, columns=None if rows else ["column", "value", "count"])


def _worst_errors(r: ReportInput) -> pd.DataFrame:
    loss = per_row_loss(r.task, r.y_test, r.output)
    worst = np.argsort(-loss, kind="stable")[:WORST_ROWS]
    table = r.test_frame.iloc[worst].reset_index(drop=True).copy()
    table.insert(0, "row", r.test_rows[worst])
    if r.task == "regression":
        table["prediction"] = np.asarray(r.output).reshape(-1)[worst]
        table["abs_error"] = loss[worst]
    else:
        proba = normalize_proba(r.output)
        table["prediction"] = [r.labels[i] for i in proba[worst].argmax(axis=1)]
        table["confidence"] = proba[worst].max(axis=1)
        table["true_class_probability"] = proba[worst, r.y_test[worst]]
        table["log_loss"] = loss[worst]
    return table


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _markdown(r: ReportInput, files: dict[str, Path], notes: list[str]) -> str:
    names = sorted(set(r.metrics) | {m for b in r.baseline_metrics.values() for m in b})
    lines = [f"# {r.title}", ""]
    lines += [f"- **{k}**: {_fmt(v)}" for k, v in r.facts.items()]
    direction = "higher" if r.higher_is_better else "lower"
    lines += [f"- **primary metric**: `{r.primary_metric}` ({direction} is better)", "",
              "## Model vs baselines (test split)", "",
              "| metric | model | " + " | ".join(r.baseline_metrics) + " |",
              "|---|---|" + "---|" * len(r.baseline_metrics)]
    for m in names:
        cells = [_fmt(r.metrics.get(m, "–"))] + [_fmt(b.get(m, "–")) for b in r.baseline_metrics.values()]
        bold = f"**{m}**" if m == r.primary_metric else m
        lines.append(f"| {bold} | " + " | ".join(cells) + " |")
    if r.slices:
        lines += ["", "## Slices", "", f"| slice | rows | {r.primary_metric} |", "|---|---|---|"]
        for s in r.slices:
            value = s["metrics"].get(r.primary_metric, "too few rows" if not s["metrics"] else "undefined")
            lines.append(f"| {s['column']}={s['value']} | {s['count']} | {_fmt(value)} |")
    if r.warnings or notes:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in [*r.warnings, *notes]]
    lines += ["", "## Files", ""]
    for name, path in files.items():
        if path.suffix == ".png":
            lines.append(f"![{name}]({path.name})")
        elif name != "report":
            lines.append(f"- [{path.name}]({path.name})")
    return "\n".join(lines) + "\n"
