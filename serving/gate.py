"""The promotion gate: does a registered candidate deserve to replace the champion?

Pure functions over ModelRegistered values, so every decision can be replayed
from the event log. Every check is reported with its numbers (GateCheck
records), passed or not, because a rejection nobody can explain gets
overridden by hand. Rules:

* the candidate beats every baseline on the primary metric;
* it beats the champion by at least the policy's margin (and strictly);
* on no slice shared with the champion does the primary metric get worse by
  more than the slice tolerance (absolute, in the metric's units).

Direction comes from the event's ``higher_is_better`` (rmse: lower is better).
A model name's first version only has to beat its baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from infra.errors import ConfigError
from infra.settings import Settings


@dataclass(frozen=True)
class GatePolicy:
    primary_metric_margin: float = 0.0
    slice_tolerance: float = 0.05

    @classmethod
    def for_model(cls, settings: Settings, model_name: str) -> "GatePolicy":
        """Settings' serving policy with ``serving.policies[model_name]`` overriding it."""
        s = settings.serving
        values = {"primary_metric_margin": s.primary_metric_margin, "slice_tolerance": s.slice_tolerance}
        override = s.policies.get(model_name, {})
        unknown = set(override) - set(values)
        if unknown:
            raise ConfigError(f"serving.policies[{model_name!r}] has unknown keys {sorted(unknown)}; "
                              f"allowed: {sorted(values)}")
        try:
            values.update({k: float(v) for k, v in override.items()})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"serving.policies[{model_name!r}]: values must be numbers ({exc})") from exc
        if values["slice_tolerance"] < 0:
            raise ConfigError(f"serving.policies[{model_name!r}]: slice_tolerance must be >= 0")
        return cls(**values)


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
        return [c for c in self.checks if not c["passed"]]

    @property
    def reason(self) -> str:
        """One line naming the failed checks with their numbers ('' when passed)."""
        return "; ".join(f"{c['name']}: {c['detail']}" for c in self.failed)


def _check(name: str, passed: bool, value: float | None, threshold: float | None, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "value": value, "threshold": threshold, "detail": detail}


def _metric(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    v = (metrics or {}).get(name)
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6g}"


def evaluate(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, policy: GatePolicy) -> GateDecision:
    """Gate decision for ``candidate`` against ``champion`` (both ModelRegistered values; champion may be None)."""
    metric = str(candidate.get("primary_metric") or "")
    higher = bool(candidate.get("higher_is_better", True))
    better = "higher" if higher else "lower"
    value = _metric(candidate.get("metrics"), metric)
    checks = [_check("primary_metric", value is not None, value, None,
                     f"{metric or '(none)'} = {_fmt(value)}" if value is not None
                     else f"candidate reports no finite value for primary metric {metric!r}")]

    def improvement(new: float, old: float) -> float:
        return new - old if higher else old - new

    baselines = candidate.get("baseline_metrics") or {}
    if not baselines:
        checks.append(_check("beats_baselines", True, value, None, "no baselines were reported; nothing to beat"))
    for name in sorted(baselines):
        base = _metric(baselines[name], metric)
        if value is None or base is None:
            checks.append(_check(f"beats_baseline:{name}", False, value, base,
                                 f"cannot compare: baseline {name} {metric} = {_fmt(base)}, candidate {_fmt(value)}"))
            continue
        ok = improvement(value, base) > 0
        checks.append(_check(f"beats_baseline:{name}", ok, value, base,
                             f"{metric} {_fmt(value)} vs baseline {name} {_fmt(base)} ({better} is better)"))

    champ_value: float | None = None
    champ_version: int | None = None
    if champion is not None:
        champ_version = int(champion.get("model_version") or 0) or None
        champ_value = _metric(champion.get("metrics"), metric)
        margin = policy.primary_metric_margin
        if value is None or champ_value is None:
            checks.append(_check("beats_champion", False, value, champ_value,
                                 f"cannot compare with champion v{champ_version}: {metric} = {_fmt(champ_value)}, "
                                 f"candidate {_fmt(value)}"))
        else:
            threshold = champ_value + margin if higher else champ_value - margin
            gain = improvement(value, champ_value)
            ok = gain > 0 and gain >= margin
            checks.append(_check("beats_champion", ok, value, threshold,
                                 f"{metric} {_fmt(value)} vs champion v{champ_version} {_fmt(champ_value)}: "
                                 f"gain {gain:+.6g}, needs > 0 and >= margin {margin:g} ({better} is better)"))
        checks.extend(_slice_checks(candidate, champion, metric, higher, policy.slice_tolerance))
    passed = all(c["passed"] for c in checks)
    return GateDecision(passed=passed, primary_metric=metric, metric_value=value, champion_metric=champ_value,
                        champion_version=champ_version, checks=checks)


def _slice_checks(candidate: Mapping[str, Any], champion: Mapping[str, Any], metric: str, higher: bool,
                  tolerance: float) -> list[dict[str, Any]]:
    champ_slices = {(s["column"], str(s["value"])): _metric(s.get("metrics"), metric)
                    for s in champion.get("slice_metrics") or []}
    out = []
    for s in sorted(candidate.get("slice_metrics") or [], key=lambda s: (s["column"], str(s["value"]))):
        key = (s["column"], str(s["value"]))
        old = champ_slices.get(key)
        if old is None:  # a slice the champion was not measured on cannot regress against it
            continue
        new = _metric(s.get("metrics"), metric)
        name = f"slice:{key[0]}={key[1]}"
        if new is None:
            out.append(_check(name, False, None, old, f"candidate has no {metric} on this slice "
                                                      f"(champion {_fmt(old)})"))
            continue
        drop = old - new if higher else new - old
        threshold = old - tolerance if higher else old + tolerance
        out.append(_check(name, drop <= tolerance, new, threshold,
                          f"{metric} {_fmt(new)} vs champion {_fmt(old)}: regression {max(drop, 0.0):.6g}, "
                          f"tolerance {tolerance:g} (n={s.get('count', '?')})"))
    return out


def decide(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, settings: Settings) -> GateDecision:
    """:func:`evaluate` with the policy configured for the candidate's model name."""
    return evaluate(candidate, champion, GatePolicy.for_model(settings, str(candidate.get("model_name", ""))))
