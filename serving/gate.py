"""The promotion gate: does a registered candidate deserve to replace the champion?

Pure functions over ModelRegistered values and, when available, the rows of
the candidate's test split with every model's output on them
(:class:`serving.paired.PairedRows`: the candidate's and its baselines' stored
by the training run, the champion's scored by the deployer on the same rows).
So every decision can be replayed from the event log and the stored
predictions. Every check is reported with its numbers (GateCheck records:
n, both values, the gain, its interval, the rule), passed or not.

Rules (``GatePolicy``, per model name in ``serving.policies``):

* **baselines**: the candidate is compared with every baseline on the same
  rows; by default it must be *non-inferior* (the lower bound of the gain's
  interval exceeds ``-baseline_margin``), so a model that ties a perfect
  baseline at the ceiling passes;
* **champion**: ``champion_rule`` with ``primary_metric_margin``. Default
  non-inferiority with margin 0.01: a model retrained on newer data replaces
  the champion unless it is credibly worse by the margin, and a champion at
  the ceiling can be replaced by an equal model. Superiority (the lower bound
  exceeds the margin) is for names where a change of model must earn itself;
* **slices** of the candidate's test rows, against the champion on the same
  rows: *no regression*, i.e. rejected only when the slice is credibly worse
  by more than ``slice_tolerance`` (the gain's upper bound is below
  ``-slice_tolerance``). Requiring every slice to *prove* non-inferiority would
  reject nearly every retrain on small data (many groups, wide intervals);
  the overall comparison carries that burden. A slice with fewer than
  ``min_slice_rows`` test rows is reported but not decisive;
* **behaviour**: every behavioural test the run declared must have passed.

Gains are direction-corrected (rmse: lower is better, so a lower rmse is a
positive gain). Margins and the slice tolerance are in the metric's units for
bounded metrics and a fraction of the reference's value for error metrics
(rmse, mae: 0.01 = 1 %; ``serving.paired.margin_in_units``). Without per-row evidence (an event from before test
predictions were stored, or a champion that cannot be scored on these rows)
the same rules are applied to the reported point estimates, and the check
says so in its detail ("unpaired").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import numpy as np

from infra.errors import ConfigError
from infra.settings import Settings
from serving.paired import RULES, Comparison, PairedRows, compare, margin_in_units, rule_bound, rule_holds

CHAMPION = "champion"
CANDIDATE = "candidate"


@dataclass(frozen=True)
class GatePolicy:
    primary_metric_margin: float = 0.01
    champion_rule: str = "non_inferiority"
    baseline_rule: str = "non_inferiority"
    baseline_margin: float = 0.01
    slice_tolerance: float = 0.05
    confidence: float = 0.95
    min_slice_rows: int = 30

    def __post_init__(self) -> None:
        for name in ("champion_rule", "baseline_rule"):
            if getattr(self, name) not in RULES:
                raise ConfigError(f"gate policy {name} must be one of {list(RULES)}, not {getattr(self, name)!r}")
        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"gate policy confidence must be in [0.5, 1), not {self.confidence}")
        if min(self.primary_metric_margin, self.baseline_margin, self.slice_tolerance) < 0:
            raise ConfigError("gate policy margins and slice_tolerance must be >= 0")
        if self.min_slice_rows < 1:
            raise ConfigError("gate policy min_slice_rows must be >= 1")

    @classmethod
    def for_model(cls, settings: Settings, model_name: str) -> GatePolicy:
        """Settings' serving policy with ``serving.policies[model_name]`` overriding it."""
        s = settings.serving
        values: dict[str, Any] = {f.name: getattr(s, f.name) for f in fields(cls)}
        override = s.policies.get(model_name, {})
        unknown = set(override) - set(values)
        if unknown:
            raise ConfigError(f"serving.policies[{model_name!r}] has unknown keys {sorted(unknown)}; "
                              f"allowed: {sorted(values)}")
        types = {f.name: f.type for f in fields(cls)}
        try:
            for k, v in override.items():
                values[k] = str(v) if types[k] == "str" else int(v) if types[k] == "int" else float(v)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"serving.policies[{model_name!r}]: bad value ({exc})") from exc
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"serving.policies[{model_name!r}]: {exc}") from exc


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    primary_metric: str
    metric_value: float | None
    champion_metric: float | None
    champion_version: int | None
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Decisive checks that failed (a small slice's failure is reported, not decisive)."""
        return [c for c in self.checks if not c["passed"] and c.get("decisive", True)]

    @property
    def reason(self) -> str:
        """One line naming the failed checks with their numbers ('' when passed)."""
        return "; ".join(f"{c['name']}: {c['detail']}" for c in self.failed)


def _finite(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _check(name: str, passed: bool, value: float | None, threshold: float | None, detail: str,
           **stats: Any) -> dict[str, Any]:
    out = {"name": name, "passed": bool(passed), "value": _finite(value), "threshold": _finite(threshold),
           "detail": detail, "n": None, "reference_value": None, "difference": None, "ci_low": None,
           "ci_high": None, "confidence": None, "rule": "", "margin": None, "decisive": True}
    for k, v in stats.items():
        out[k] = v if k in ("rule", "decisive", "n") else _finite(v)
    return out


def _metric(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    return _finite((metrics or {}).get(name))


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.6g}"


@dataclass(frozen=True)
class _Ctx:
    metric: str
    higher: bool
    policy: GatePolicy
    rows: PairedRows | None

    @property
    def better(self) -> str:
        return "higher" if self.higher else "lower"


def _paired_check(name: str, ctx: _Ctx, rows: PairedRows, reference: str, rule: str, margin: float,
                  label: str, *, decisive: bool = True) -> dict[str, Any]:
    c: Comparison = compare(rows.task, ctx.metric, ctx.higher, rows.y, rows.outputs[CANDIDATE],
                            rows.outputs[reference], confidence=ctx.policy.confidence)
    margin = margin_in_units(ctx.metric, margin, c.reference_value)
    bound = rule_bound(rule, margin)
    stats = dict(n=c.n, reference_value=c.reference_value, difference=c.difference, ci_low=c.ci_low,
                 ci_high=c.ci_high, confidence=c.confidence, rule=rule, margin=margin, decisive=decisive)
    if not c.defined:
        return _check(name, False, c.value, None, f"{ctx.metric} is undefined on these {c.n} rows "
                      f"(candidate {_fmt(c.value)}, {label} {_fmt(c.reference_value)})", **stats)
    ok = rule_holds(rule, margin, c.ci_low, c.ci_high)
    pct = f"{c.confidence:.0%}"
    need = f"the upper bound >= {bound:+.4g}" if rule == "no_regression" else f"the lower bound > {bound:+.4g}"
    detail = (f"{ctx.metric} {_fmt(c.value)} vs {label} {_fmt(c.reference_value)} on the same {c.n} rows: "
              f"gain {c.difference:+.4g}, {pct} CI [{c.ci_low:+.4g}, {c.ci_high:+.4g}] ({c.method}); "
              f"{rule} needs {need} ({ctx.better} is better)"
              + ("" if decisive else f"; not decisive: fewer than {ctx.policy.min_slice_rows} rows"))
    return _check(name, ok, c.value, None, detail, **stats)


def _unpaired_check(name: str, ctx: _Ctx, value: float | None, ref: float | None, rule: str, margin: float,
                    label: str) -> dict[str, Any]:
    if value is None or ref is None:
        return _check(name, False, value, ref, f"cannot compare: {label} {ctx.metric} = {_fmt(ref)}, "
                      f"candidate {_fmt(value)}", reference_value=ref, rule=rule, margin=margin)
    gain = value - ref if ctx.higher else ref - value
    margin = margin_in_units(ctx.metric, margin, ref)
    bound = rule_bound(rule, margin)
    threshold = ref + bound if ctx.higher else ref - bound
    return _check(name, gain > bound, value, threshold,
                  f"unpaired (no per-row test predictions): {ctx.metric} {_fmt(value)} vs {label} {_fmt(ref)}, "
                  f"gain {gain:+.4g}; {rule} needs > {bound:+.4g} ({ctx.better} is better)",
                  reference_value=ref, difference=gain, rule=rule, margin=margin)


def evaluate(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, policy: GatePolicy,
             rows: PairedRows | None = None) -> GateDecision:
    """Gate decision for ``candidate`` against ``champion`` (ModelRegistered values; champion may be None).

    ``rows``: the candidate's test split with outputs 'candidate', each
    baseline by name and, when the champion was scored on them, 'champion'.
    """
    metric = str(candidate.get("primary_metric") or "")
    ctx = _Ctx(metric, bool(candidate.get("higher_is_better", True)), policy, rows)
    value = _metric(candidate.get("metrics"), metric)
    checks = [_check("primary_metric", value is not None, value, None,
                     f"{metric or '(none)'} = {_fmt(value)}" if value is not None
                     else f"candidate reports no finite value for primary metric {metric!r}")]
    checks += _baseline_checks(candidate, ctx, value)
    champ_value: float | None = None
    champ_version: int | None = None
    if champion is not None:
        champ_version = int(champion.get("model_version") or 0) or None
        champ_value = _metric(champion.get("metrics"), metric)
        label = f"champion v{champ_version}"
        if rows is not None and CHAMPION in rows.outputs:
            checks.append(_paired_check("beats_champion", ctx, rows, CHAMPION, policy.champion_rule,
                                        policy.primary_metric_margin, label))
            champ_value = checks[-1]["reference_value"]
            checks += _paired_slice_checks(ctx, rows)
        else:
            checks.append(_unpaired_check("beats_champion", ctx, value, champ_value, policy.champion_rule,
                                          policy.primary_metric_margin, label))
            checks += _unpaired_slice_checks(candidate, champion, ctx)
    checks += behaviour_checks(candidate.get("behaviour_tests") or [])
    passed = all(c["passed"] for c in checks if c["decisive"])
    return GateDecision(passed=passed, primary_metric=metric, metric_value=value, champion_metric=champ_value,
                        champion_version=champ_version, checks=checks)


def _baseline_checks(candidate: Mapping[str, Any], ctx: _Ctx, value: float | None) -> list[dict[str, Any]]:
    baselines = candidate.get("baseline_metrics") or {}
    if not baselines:
        return [_check("beats_baselines", True, value, None, "no baselines were reported; nothing to beat")]
    p = ctx.policy
    out = []
    for name in sorted(baselines):
        if ctx.rows is not None and name in ctx.rows.outputs:
            out.append(_paired_check(f"beats_baseline:{name}", ctx, ctx.rows, name, p.baseline_rule,
                                     p.baseline_margin, f"baseline {name}"))
        else:
            out.append(_unpaired_check(f"beats_baseline:{name}", ctx, value, _metric(baselines[name], ctx.metric),
                                       p.baseline_rule, p.baseline_margin, f"baseline {name}"))
    return out


def _paired_slice_checks(ctx: _Ctx, rows: PairedRows) -> list[dict[str, Any]]:
    out = []
    for col in sorted(rows.slices):
        values = np.asarray(rows.slices[col]).astype(str)
        for v in sorted(set(values.tolist())):
            mask = values == v
            out.append(_paired_check(f"slice:{col}={v}", ctx, rows.subset(mask), CHAMPION, "no_regression",
                                     ctx.policy.slice_tolerance, "champion",
                                     decisive=int(mask.sum()) >= ctx.policy.min_slice_rows))
    return out


def _unpaired_slice_checks(candidate: Mapping[str, Any], champion: Mapping[str, Any],
                           ctx: _Ctx) -> list[dict[str, Any]]:
    """Slices by the reported numbers (different rows: only a coarse tolerance check)."""
    champ_slices = {(s["column"], str(s["value"])): _metric(s.get("metrics"), ctx.metric)
                    for s in champion.get("slice_metrics") or []}
    tol = ctx.policy.slice_tolerance
    out = []
    for s in sorted(candidate.get("slice_metrics") or [], key=lambda s: (s["column"], str(s["value"]))):
        key = (s["column"], str(s["value"]))
        old = champ_slices.get(key)
        if old is None:  # a slice the champion was not measured on cannot regress against it
            continue
        new = _metric(s.get("metrics"), ctx.metric)
        name = f"slice:{key[0]}={key[1]}"
        n = int(s.get("count") or 0)
        decisive = n >= ctx.policy.min_slice_rows
        if new is None:
            out.append(_check(name, False, None, old, f"candidate has no {ctx.metric} on this slice "
                              f"(champion {_fmt(old)})", n=n, reference_value=old, rule="tolerance",
                              margin=tol, decisive=decisive))
            continue
        gain = new - old if ctx.higher else old - new
        tol = margin_in_units(ctx.metric, ctx.policy.slice_tolerance, old)
        threshold = old - tol if ctx.higher else old + tol
        out.append(_check(name, gain >= -tol, new, threshold,
                          f"unpaired: {ctx.metric} {_fmt(new)} vs champion {_fmt(old)}: regression "
                          f"{max(-gain, 0.0):.6g}, tolerance {tol:g} (n={n})", n=n, reference_value=old,
                          difference=gain, rule="tolerance", margin=tol, decisive=decisive))
    return out


def behaviour_checks(results: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One ``behaviour:<name>`` check per behavioural test result stored with the run."""
    return [_check(f"behaviour:{r['name']}", bool(r["passed"]), r.get("value"), r.get("threshold"),
                   str(r.get("detail", "")), n=None if r.get("n") is None else int(r["n"]), rule="behaviour")
            for r in results]


def decide(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, settings: Settings,
           rows: PairedRows | None = None) -> GateDecision:
    """:func:`evaluate` with the policy configured for the candidate's model name."""
    return evaluate(candidate, champion, GatePolicy.for_model(settings, str(candidate.get("model_name", ""))), rows)
