"""Builders for event records: one place that fills the common header."""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterable, Mapping

from schemas.types import EventHeader


def now_us() -> int:
    return time.time_ns() // 1000


def new_header(producer: str, *, correlation_id: str | None = None,
               parents: Iterable[str] = (), event_id: str | None = None) -> EventHeader:
    """A fresh EventHeader. Pass ``parents`` (event ids) so lineage can be walked back in SQL."""
    eid = event_id or str(uuid.uuid4())
    return {
        "event_id": eid,
        "event_time": now_us(),
        "producer": producer,
        "correlation_id": correlation_id or eid,
        "parent_event_ids": [str(p) for p in parents],
    }


def child_header(producer: str, parent: Mapping[str, Any], **kw: Any) -> EventHeader:
    """Header of an event caused by ``parent`` (a decoded event value): same trace, parent linked."""
    ph = parent["header"]
    return new_header(producer, correlation_id=str(ph["correlation_id"]), parents=[str(ph["event_id"])], **kw)


def header_of(value: dict[str, Any]) -> dict[str, Any]:
    return value["header"]


def event_id_of(value: dict[str, Any]) -> str:
    return str(value["header"]["event_id"])


def will_be_retried(run_update: Mapping[str, Any]) -> bool:
    """A failed TrainingRunUpdated that is not the run's last word: the training consumer retries its event.

    Followers (``train --wait``, the search coordinator) wait for the next attempt instead of reporting failure.
    Told by the schema's ``final`` field; events written before the field existed read as final.
    """
    return run_update.get("status") == "failed" and not run_update.get("final", True)
