"""What ``modelbus runs show`` adds about a run's model: slices, behavioural tests and the gate's checks.

Read from ClickHouse (models, deployments, deployment_rejections), so the
view shows what the gate decided with its intervals, not a recomputation.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

_DETAIL_SQL = """
SELECT `slice_metrics.column` AS s_column, `slice_metrics.value` AS s_value, `slice_metrics.count` AS s_count,
       `slice_metrics.metrics` AS s_metrics, `behaviour_tests.name` AS b_name, `behaviour_tests.kind` AS b_kind,
       `behaviour_tests.passed` AS b_passed, `behaviour_tests.n` AS b_n, `behaviour_tests.value` AS b_value,
       `behaviour_tests.threshold` AS b_threshold
FROM models FINAL WHERE run_id = {run:String} ORDER BY event_time LIMIT 1
"""

_CHECKS_SQL = """
SELECT '{decision}' AS decision, `checks.name` AS name, `checks.passed` AS passed, `checks.value` AS value,
       `checks.reference_value` AS reference_value, `checks.difference` AS difference, `checks.ci_low` AS ci_low,
       `checks.ci_high` AS ci_high, `checks.n` AS n, `checks.rule` AS rule, `checks.margin` AS margin,
       `checks.decisive` AS decisive, `checks.detail` AS detail
FROM {table} FINAL WHERE model_name = {{name:String}} AND model_version = {{version:Int32}} {extra}
ORDER BY event_time LIMIT 1
"""


def _f(v: Any) -> str:
    return "—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _zip(row: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    keys = [k for k in row if k.startswith(prefix)]
    return [dict(zip((k[len(prefix):] for k in keys), values)) for values in zip(*(row[k] for k in keys))]


def model_tables(store, run_id: str, model: dict[str, Any] | None) -> list[Table]:
    """Slice metrics, behavioural tests and gate checks of the run's registered model (what exists)."""
    if not model:
        return []
    rows = store.query_rows(_DETAIL_SQL, {"run": run_id})
    out: list[Table] = []
    primary = model["primary_metric"]
    if rows and rows[0]["s_column"]:
        t = Table("slice", "rows", primary, title="slices (test split)", title_justify="left")
        for s in _zip(rows[0], "s_"):
            t.add_row(f"{s['column']}={s['value']}", str(s["count"]), _f(s["metrics"].get(primary)))
        out.append(t)
    if rows and rows[0]["b_name"]:
        t = Table("test", "kind", "passed", "n", "value", "threshold", title="behavioural tests",
                  title_justify="left")
        for b in _zip(rows[0], "b_"):
            t.add_row(b["name"], b["kind"], "yes" if b["passed"] else "[red]no[/]", str(b["n"]), _f(b["value"]),
                      _f(b["threshold"]))
        out.append(t)
    checks = gate_checks(store, model["model_name"], int(model["model_version"]))
    if checks:
        t = Table("check", "passed", "n", "candidate", "reference", "gain", "CI", "rule",
                  title=f"gate ({checks[0]['decision']})", title_justify="left")
        for c in checks:
            ci = "—" if c["ci_low"] is None else f"[{c['ci_low']:+.4g}, {c['ci_high']:+.4g}]"
            passed = ("yes" if c["passed"] else "[red]no[/]") + ("" if c["decisive"] else " (not decisive)")
            rule = c["rule"] + (f" ±{c['margin']:g}" if c["margin"] is not None else "")
            t.add_row(c["name"], passed, _f(c["n"]), _f(c["value"]), _f(c["reference_value"]), _f(c["difference"]),
                      ci, rule)
        out.append(t)
    return out


def gate_checks(store, model_name: str, version: int) -> list[dict[str, Any]]:
    """The gate's checks of one model version, from its ModelDeployed (promote) or DeploymentRejected row."""
    for decision, table, extra in (("deployed", "deployments", "AND action = 'promote'"),
                                   ("rejected", "deployment_rejections", "")):
        rows = store.query_rows(_CHECKS_SQL.format(decision=decision, table=table, extra=extra),
                                {"name": model_name, "version": version})
        if rows and rows[0]["name"]:
            r = rows[0]
            return [{"decision": decision, **c} for c in _zip({k: v for k, v in r.items() if k != "decision"}, "")]
    return []
