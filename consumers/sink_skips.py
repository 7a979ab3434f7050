"""Where the telemetry sink resumes: after the last record it stored OR dead-lettered, per partition.

The sink's position lives in ClickHouse (rows carry their Kafka coordinates).
Dead-lettered records leave no telemetry row, so their coordinates are written
to ``telemetry_sink_skipped`` (migration 007) once the dead letter is
acknowledged and after the batch's inserts (recording them earlier could make
a crash skip records never stored). The resume point is the record handled
last among both tables, so a restart neither re-dead-letters nor stalls behind
a poison record; only a crash between a batch's insert and its skip record
dead-letters those records once more.
"""

from __future__ import annotations

import json

SKIPPED_TABLE = "telemetry_sink_skipped"

Skip = tuple[int, int, str]   # partition, offset, reason


def record_skips(store, topic: str, skips: list[Skip]) -> None:
    """One insert for the coordinates dead-lettered together (they are durable on the DLQ already)."""
    if not skips:
        return
    rows = "\n".join(json.dumps({"kafka_topic": topic, "kafka_partition": p, "kafka_offset": o, "reason": r})
                     for p, o, r in skips)
    store.insert_raw(SKIPPED_TABLE, rows.encode(), "JSONEachRow",
                     columns=["kafka_topic", "kafka_partition", "kafka_offset", "reason"])


def last_handled(store, raw_table: str, topic: str, since) -> dict[int, int]:
    """Offset handled last per partition, stored or skipped.

    Within each table the last by insert time counts (not the max: a recreated topic restarts at 0). A skip
    counts only when recorded after the partition's latest insert: skips are recorded after the inserts of
    their batch, so an older one belongs to an earlier batch, or to a topic that was recreated since.
    """
    where = "kafka_topic = {t:String}" + (" AND inserted_at >= {s:DateTime64(6)}" if since is not None else "")
    params = {"t": topic} if since is None else {"t": topic, "s": since}

    def last(table: str) -> dict[int, tuple]:
        sql = (f"SELECT kafka_partition AS p, argMax(kafka_offset, (inserted_at, kafka_offset)) AS o, "
               f"max(inserted_at) AS at FROM {table} WHERE {where} GROUP BY kafka_partition")
        return {int(r["p"]): (r["at"], int(r["o"])) for r in store.query_rows(sql, params)}

    stored, skipped = last(raw_table), last(SKIPPED_TABLE)
    out = {p: o for p, (_at, o) in stored.items()}
    for p, (at, o) in skipped.items():
        if p not in stored or at >= stored[p][0]:
            out[p] = max(o, out.get(p, o))
    return out
