"""The validation report: every finding with enough context to fix the data without opening it.

Kept separate from the checks so the CLI, the SDK exception and the stored
metadata all render the same object.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["failure", "warning"]
MAX_EXAMPLES = 5


def _show(value: Any) -> str:
    """A short, printable representation of an offending value (never the whole cell)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Issue(BaseModel):
    """One check that did not pass, aggregated over the whole dataset."""

    model_config = ConfigDict(frozen=True)

    severity: Severity
    column: str | None = Field(None, description="Column concerned; None for table-wide checks.")
    rule: str = Field(description="Stable rule id, e.g. 'not_null', 'in_range(0, 120)', 'label_classes'.")
    message: str = Field(description="One readable sentence.")
    rows: int = Field(0, description="Rows that failed the rule (0 when the rule is about the column as a whole).")
    examples: tuple[str, ...] = Field((), description="A few offending values.")
    example_rows: tuple[int, ...] = Field((), description="0-based row numbers of a few offending rows.")


class ValidationReport(BaseModel):
    """All findings of one validation run; failures refuse the dataset, warnings are recorded."""

    model_config = ConfigDict(frozen=True)

    rows_checked: int = 0
    columns: tuple[str, ...] = ()
    issues: tuple[Issue, ...] = ()

    @property
    def failures(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "failure"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def warning_lines(self) -> list[str]:
        return [i.message for i in self.warnings]

    def summary(self) -> str:
        if self.ok:
            w = len(self.warnings)
            return f"{self.rows_checked} rows passed validation" + (f" with {w} warning(s)" if w else "")
        return f"{len(self.failures)} check(s) failed on {self.rows_checked} rows"

    def as_table(self) -> list[dict[str, Any]]:
        """Rows for tabular display (rich table in the CLI, DataFrame in notebooks)."""
        return [{
            "severity": i.severity, "column": i.column or "-", "rule": i.rule, "rows": i.rows,
            "examples": ", ".join(i.examples), "example_rows": ", ".join(map(str, i.example_rows)),
            "message": i.message,
        } for i in self.issues]


class IssueCollector:
    """Merges findings of the same (severity, column, rule) across blocks of a streamed dataset."""

    def __init__(self) -> None:
        self._issues: dict[tuple[str, str | None, str], dict[str, Any]] = {}

    def add(self, severity: Severity, column: str | None, rule: str, message: str, rows: int = 0,
            examples: list[Any] | tuple[Any, ...] = (), example_rows: list[int] | tuple[int, ...] = ()) -> None:
        key = (severity, column, rule)
        cur = self._issues.get(key)
        if cur is None:
            cur = self._issues[key] = {"message": message, "rows": 0, "examples": [], "example_rows": []}
        cur["rows"] += int(rows)
        for v in examples:
            s = _show(v)
            if len(cur["examples"]) < MAX_EXAMPLES and s not in cur["examples"]:
                cur["examples"].append(s)
        for r in example_rows:
            if len(cur["example_rows"]) < MAX_EXAMPLES and int(r) not in cur["example_rows"]:
                cur["example_rows"].append(int(r))

    def has_failures(self) -> bool:
        return any(k[0] == "failure" for k in self._issues)

    def issues(self) -> tuple[Issue, ...]:
        out = []
        for (severity, column, rule), v in self._issues.items():
            msg = v["message"] + (f" ({v['rows']} row{'s' if v['rows'] != 1 else ''})" if v["rows"] else "")
            out.append(Issue(severity=severity, column=column, rule=rule, message=msg, rows=v["rows"],
                             examples=tuple(v["examples"]), example_rows=tuple(v["example_rows"])))
        order = {"failure": 0, "warning": 1}
        return tuple(sorted(out, key=lambda i: (order[i.severity], i.column or "", i.rule)))
