"""The deployer's records and announcements, as pure functions over decoded event values.

Kept apart from the faust worker so that the same code builds the events of a
promotion (deployer), a rollback (``modelbus rollback``) and the champion
records the deployer keeps in its changelog-backed table. Event ids of the
deployer's announcements are derived (uuid5 of model, version and decision),
never random: a redelivered ModelRegistered produces the very same id, which is
how a restarted deployer recognises an announcement it already made.
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping

from schemas.events import child_header, new_header
from schemas.types import DeploymentRejected, GateCheck, ModelDeployed, ModelRegistered

PRODUCER = "consumers.deployer"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://modelbus/consumers/deployer")
DEPLOYED, REJECTED = "deployed", "rejected"
HISTORY_KEEP = 20   # champion records kept per model name (rollback targets)
DECIDED_KEEP = 1000  # decided versions remembered per model name

_CHAMPION_FIELDS = ("model_name", "model_version", "primary_metric", "higher_is_better", "artifact_uri", "checksum",
                    "run_id", "dataset_version")


def decision_event_id(model_name: str, version: int, decision: str) -> str:
    """The event id of the one announcement of ``decision`` about ``model_name`` v``version``."""
    return str(uuid.uuid5(NAMESPACE, f"{model_name}/{int(version)}/{decision}"))


def champion_record(registered: Mapping[str, Any], *, deployed_event_id: str, at_us: int) -> dict[str, Any]:
    """What the gate and reconciliation need of a deployed ModelRegistered value (JSON-safe)."""
    rec: dict[str, Any] = {k: registered.get(k) for k in _CHAMPION_FIELDS}
    rec["model_version"] = int(rec["model_version"])
    rec["metrics"] = {k: float(v) for k, v in (registered.get("metrics") or {}).items()}
    rec["slice_metrics"] = [{"column": str(s["column"]), "value": str(s["value"]), "count": int(s.get("count", 0)),
                             "metrics": {k: float(v) for k, v in (s.get("metrics") or {}).items()}}
                            for s in registered.get("slice_metrics") or []]
    rec["registered_event_id"] = str((registered.get("header") or {}).get("event_id", ""))
    rec["deployed_event_id"] = deployed_event_id
    rec["at"] = int(at_us)
    return rec


def record_from_deployed(deployed: ModelDeployed) -> dict[str, Any]:
    """A champion record from a ModelDeployed value (rollbacks: slice metrics come from the history)."""
    header: Mapping[str, Any] = deployed.get("header") or {}
    return {"model_name": deployed["model_name"], "model_version": int(deployed["model_version"]),
            "primary_metric": deployed.get("primary_metric", ""), "higher_is_better": True,
            "artifact_uri": deployed.get("artifact_uri", ""), "checksum": deployed.get("checksum", ""),
            "run_id": deployed.get("run_id", ""), "dataset_version": deployed.get("dataset_version", ""),
            "metrics": {k: float(v) for k, v in (deployed.get("metrics") or {}).items()}, "slice_metrics": [],
            "registered_event_id": "", "deployed_event_id": str(header.get("event_id", "")),
            "at": event_time_us(header)}


def event_time_us(header: Mapping[str, Any]) -> int:
    """The header's time in microseconds: an int as built, an aware datetime as decoded (``TimestampMicros``)."""
    t = header.get("event_time", 0)
    if hasattr(t, "timestamp"):  # decoded timestamp-micros
        return int(round(t.timestamp() * 1_000_000))
    return int(t or 0)


def effective_champion(state: Mapping[str, Any] | None, rollback: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The champion a model name has now: the newer of the last promotion and the last rollback.

    A rollback names a version; its full record (slice metrics included) comes
    from the history of promotions when the deployer promoted it itself.
    """
    champion = (state or {}).get("champion")
    if not rollback or (champion and champion.get("at", 0) >= rollback.get("at", 0)):
        return champion
    known = (state or {}).get("history", {}).get(str(rollback["model_version"]))
    if known:
        return {**known, "at": rollback["at"], "deployed_event_id": rollback.get("deployed_event_id", "")}
    return dict(rollback)


def with_decision(state: Mapping[str, Any] | None, version: int, decision: str, event_id: str, *,
                  champion: dict[str, Any] | None = None, **info: Any) -> dict[str, Any]:
    """A new table value: ``version`` decided (and, when deployed, the new champion in front)."""
    state = dict(state or {})
    decided = dict(state.get("decided") or {})
    decided[str(version)] = {"decision": decision, "event_id": event_id, **info}
    if len(decided) > DECIDED_KEEP:
        for old in sorted(decided, key=int)[:len(decided) - DECIDED_KEEP]:
            del decided[old]
    state["decided"] = decided
    if champion is not None:
        history = dict(state.get("history") or {})
        history[str(champion["model_version"])] = champion
        for old in sorted(history, key=lambda v: history[v].get("at", 0))[:max(0, len(history) - HISTORY_KEEP)]:
            del history[old]
        state["history"] = history
        state["champion"] = champion
    return state


def _number(check: Mapping[str, Any], key: str) -> float | None:
    return None if check.get(key) is None else float(check[key])


def gate_checks(checks: list[Mapping[str, Any]]) -> list[GateCheck]:
    """GateCheck records (every check, passed or not, with its numbers, interval and rule)."""
    return [{"name": str(c["name"]), "passed": bool(c["passed"]), "detail": str(c.get("detail", "")),
             "n": None if c.get("n") is None else int(c["n"]), "rule": str(c.get("rule") or ""),
             "decisive": bool(c.get("decisive", True)), "value": _number(c, "value"),
             "threshold": _number(c, "threshold"), "reference_value": _number(c, "reference_value"),
             "difference": _number(c, "difference"), "ci_low": _number(c, "ci_low"), "ci_high": _number(c, "ci_high"),
             "confidence": _number(c, "confidence"), "margin": _number(c, "margin")}
            for c in checks]


def deployed_event(registered: ModelRegistered, decision: Any, result: Any, *,
                   previous_version: int | None) -> ModelDeployed:
    """ModelDeployed for a promoted candidate (``decision``: GateDecision, ``result``: DeployResult)."""
    name, version = registered["model_name"], int(registered["model_version"])
    return {
        "header": child_header(PRODUCER, registered, event_id=decision_event_id(name, version, DEPLOYED)),
        "model_name": name, "model_version": version, "previous_version": previous_version, "action": "promote",
        "artifact_uri": registered["artifact_uri"], "checksum": registered["checksum"], "backend": result.backend,
        "repository_uri": result.repository_uri, "primary_metric": decision.primary_metric,
        "metric_value": decision.metric_value, "champion_metric": decision.champion_metric,
        "metrics": {k: float(v) for k, v in (registered.get("metrics") or {}).items()},
        "checks": gate_checks(decision.checks), "run_id": registered.get("run_id", ""),
        "dataset_version": registered.get("dataset_version", ""),
    }


def rejected_event(registered: ModelRegistered, decision: Any, *, stage: str, reason: str,
                   champion_version: int | None) -> DeploymentRejected:
    """DeploymentRejected: where it stopped, why, and every gate check with its numbers."""
    name, version = registered["model_name"], int(registered["model_version"])
    return {
        "header": child_header(PRODUCER, registered, event_id=decision_event_id(name, version, REJECTED)),
        "model_name": name, "model_version": version, "stage": stage, "reason": reason,
        "checks": gate_checks(decision.checks), "champion_version": champion_version,
        "primary_metric": decision.primary_metric, "metric_value": decision.metric_value,
        "champion_metric": decision.champion_metric,
    }


def rollback_event(result: Any, info: Mapping[str, Any]) -> ModelDeployed:
    """ModelDeployed(action='rollback') for a rollback done by hand (``info``: the version's deploy.json)."""
    metrics = {k: float(v) for k, v in (info.get("metrics") or {}).items()}
    primary = str(info.get("primary_metric", ""))
    return {
        "header": new_header(PRODUCER + ".rollback"), "model_name": result.model_name,
        "model_version": int(result.model_version), "previous_version": result.previous_version,
        "action": "rollback", "artifact_uri": result.artifact_uri or str(info.get("artifact_uri", "")),
        "checksum": result.checksum or str(info.get("checksum", "")), "backend": result.backend,
        "repository_uri": result.repository_uri, "primary_metric": primary,
        "metric_value": metrics.get(primary), "champion_metric": None, "metrics": metrics, "checks": [],
        "run_id": str(info.get("run_id", "")), "dataset_version": str(info.get("dataset_version", "")),
    }


__all__ = ["DEPLOYED", "REJECTED", "champion_record", "decision_event_id", "deployed_event", "effective_champion",
           "event_time_us", "gate_checks", "record_from_deployed", "rejected_event", "rollback_event", "with_decision"]
