"""The deployer's champion, rebuilt from durable state when its changelog does not know it.

The faust table is the deployer's fast memory, but it lives on the broker (its
changelog): the embedded in-memory broker loses it on every restart, and a
changelog can lag behind what was deployed. A gate that then sees "no
champion" promotes any candidate, however worse than the model Triton is still
serving. Two stores outlive the broker and together say who the champion is:

* the Triton repository: which version is configured to serve;
* ClickHouse ``deployments`` (the last promotion or rollback of the name) and
  ``models`` (that version's registration: metrics and slice metrics, which
  the gate compares against).

Triton's repository decides (it is what users get): when it serves a version
the table does not name as champion, that version's record comes from
ClickHouse. When the durable state cannot be read (ClickHouse down, or the
metadata sink not caught up) the deployer does not decide: ``ChampionUnknown``
is retried like any outage.
"""

from __future__ import annotations

import logging
from typing import Any

from consumers.deploy_events import champion_record
from infra.clickhouse.errors import ClickHouseError
from serving.errors import ServerUnavailable

log = logging.getLogger("modelbus.consumers.champion")

_REGISTRATION = ("SELECT * FROM models FINAL WHERE model_name = {n:String} AND model_version = {v:Int32} "
                 "ORDER BY event_time DESC LIMIT 1")
_DEPLOYED_AT = ("SELECT event_id, toUnixTimestamp64Micro(event_time) AS at FROM deployments FINAL "
                "WHERE model_name = {n:String} AND model_version = {v:Int32} ORDER BY event_time DESC LIMIT 1")


class ChampionUnknown(ServerUnavailable):
    """The durable state that names the champion cannot be read now; no gate decision until it can."""


def champion_for(store, repository, name: str, candidate: int,
                 table_champion: dict[str, Any] | None) -> dict[str, Any] | None:
    """The champion the gate compares ``name`` v``candidate`` with.

    Triton's repository decides whether there is one (a name it serves no version of has nothing to protect)
    and which version it is; the table's record is used when it names that version, ClickHouse's otherwise.
    The candidate itself never counts: a deployer killed after loading it gates it again on restart.
    """
    try:
        serving = repository.serving_versions(name)
    except Exception as exc:
        raise ChampionUnknown(f"cannot read the Triton repository for {name}: {exc}") from exc
    others = [v for v in serving if v != candidate]
    if not others or (table_champion and int(table_champion["model_version"]) == max(others)):
        return table_champion
    version = max(others)
    durable = durable_champion(store, name, version)
    log.warning("champion of %s rebuilt from the Triton repository and ClickHouse: v%d (the deployer's table "
                "knew %s)", name, version, f"v{table_champion['model_version']}" if table_champion else "none")
    return durable


def durable_champion(store, name: str, version: int) -> dict[str, Any]:
    """The champion record of ``name`` v``version`` from ClickHouse's ``models`` and ``deployments``
    (``store``: a callable returning the metadata store, connected on first use)."""
    try:
        ch = store()
        reg = ch.query_rows(_REGISTRATION, {"n": name, "v": version})
        deployed = ch.query_rows(_DEPLOYED_AT, {"n": name, "v": version})
    except ClickHouseError as exc:
        raise ChampionUnknown(f"cannot read the registration of {name} v{version} from ClickHouse: {exc}") from exc
    if not reg:
        raise ChampionUnknown(f"Triton serves {name} v{version}, but ClickHouse has no registration for it (yet)")
    return champion_record(_registered(reg[0]), deployed_event_id=deployed[0]["event_id"] if deployed else "",
                           at_us=int(deployed[0]["at"]) if deployed else 0)


def _registered(row: dict[str, Any]) -> dict[str, Any]:
    """A ``models`` row in the shape of a ModelRegistered value (what champion_record reads)."""
    slices = [{"column": c, "value": v, "count": int(n), "metrics": dict(m or {})}
              for c, v, n, m in zip(row.get("slice_metrics.column") or [], row.get("slice_metrics.value") or [],
                                    row.get("slice_metrics.count") or [], row.get("slice_metrics.metrics") or [])]
    return {**row, "metrics": dict(row.get("metrics") or {}), "slice_metrics": slices,
            "header": {"event_id": row.get("event_id", "")}}
