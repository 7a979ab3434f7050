"""Reconciliation: make Triton serve every champion again without waiting for new events.

Triton in explicit model-control mode forgets what it served when it restarts,
and a repository on local disk may be gone with the machine. The deployer
therefore compares its desired state (the champion per model name, recovered
from its changelog table) with Triton's repository index, at start and then
periodically, and loads whatever is missing: ``Deployer.deploy`` re-fetches
the artifact from the artifact store (re-writing the repository version if its
files are gone), verifies the checksum, loads and smoke-tests it.

A model that serves a *different* version than desired is left alone and only
logged: that is a rollback or a deployment in flight (its event is on its way),
and reverting it here would race with it. Reconcile reloads are logged under
the stage name ``reconcile`` and publish no events: nothing changed in what
serves, only Triton caught up with it.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from serving.deploy import Deployer
from serving.errors import ServerUnavailable, ServingError
from serving.repository import step_model_name

log = logging.getLogger("modelbus.consumers.deployer")
STAGE_RECONCILE = "reconcile"


@dataclass
class ReconcileReport:
    """What one pass did (returned for tests and logs)."""

    checked: int = 0
    reloaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    mismatched: dict[str, str] = field(default_factory=dict)
    triton_down: bool = False


def ready_versions(index: Iterable[Mapping[str, Any]]) -> dict[str, set[int]]:
    """Model name → versions Triton reports READY, from its repository index."""
    out: dict[str, set[int]] = {}
    for m in index:
        if str(m.get("state", "")).upper() == "READY" and str(m.get("version", "")).isdigit():
            out.setdefault(str(m.get("name", "")), set()).add(int(m["version"]))
    return out


def as_registered(record: Mapping[str, Any]) -> dict[str, Any]:
    """The ModelRegistered fields ``Deployer.deploy`` reads, from a champion record."""
    return {**record, "header": {"event_id": record.get("registered_event_id") or record.get("deployed_event_id", "")}}


def reconcile(deployer: Deployer, desired: Mapping[str, Mapping[str, Any]]) -> ReconcileReport:
    """Load every desired champion Triton does not serve at all; never raises for one bad model."""
    report = ReconcileReport()
    try:
        ready = ready_versions(deployer.client.models())
    except ServingError as exc:
        report.triton_down = True
        log.warning("stage=%s Triton unavailable, will retry: %s", STAGE_RECONCILE, exc)
        return report
    for name, record in sorted(desired.items()):
        report.checked += 1
        want = int(record["model_version"])
        have = ready.get(name, set())
        if want in have and (not deployer.uses_steps or want in ready.get(step_model_name(name, want), set())):
            continue
        if have and want not in have:
            note = f"serves v{max(have)}, champion is v{want}; left as is (rollback or deployment in flight)"
            report.mismatched[name] = note
            log.debug("stage=%s model=%s %s", STAGE_RECONCILE, name, note)
            continue
        try:
            result = deployer.deploy(as_registered(record), action=STAGE_RECONCILE)
        except ServerUnavailable as exc:
            report.triton_down = True
            log.warning("stage=%s Triton unavailable, will retry: %s", STAGE_RECONCILE, exc)
            return report
        except ServingError as exc:
            report.failed[name] = str(exc)
            log.error("stage=%s model=%s version=%d failed: %s", STAGE_RECONCILE, name, want, exc)
            continue
        if result.ok:
            report.reloaded.append(name)
            log.info("stage=%s model=%s version=%d reloaded into Triton in %.1fs", STAGE_RECONCILE, name, want,
                     result.duration_s)
        else:
            report.failed[name] = f"{result.stage}: {result.reason}"
            log.error("stage=%s model=%s version=%d failed at %s: %s", STAGE_RECONCILE, name, want, result.stage,
                      result.reason)
    return report


def triton_live(http_url: str, timeout: float = 2.0) -> bool:
    """Whether Triton answers its liveness probe: tells a refused candidate from a server that is down."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/live", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False
