"""One size limit for every Kafka record ModelBus writes or meets.

Brokers refuse a record over ``message.max.bytes`` (1,000,000 on Apache
Kafka), and librdkafka refuses it locally with ``MSG_SIZE_TOO_LARGE``. A
producer that only learns this from the broker fails late and opaquely; a
consumer whose dead-letter copy of such a record is refused cannot commit it
and meets it again after every restart (a crash loop). So the limit is checked
in one place:

* ``check`` refuses an event over ``kafka.max_message_bytes`` before it is
  queued, with the size and the limit in the message (``EventTooLarge``);
* ``oversized`` tells a consumer that a record it fetched is over the limit
  (it is dead-lettered as ``oversized`` without being handled);
* ``fit_dead_letter`` shrinks a dead-letter record to fit: the value is cut to
  what the limit leaves after key and headers, and headers say that it was cut
  and how long the original was. The source coordinates in the headers still
  name the full record, which stays readable on its topic until retention.
"""

from __future__ import annotations

from infra.errors import EventTooLarge

H_TRUNCATED = "modelbus.dlq.truncated"            # 'true' when the value is a prefix of the original
H_ORIGINAL_SIZE = "modelbus.dlq.original_size"    # bytes of the original value
# librdkafka counts a record's framing (length, attributes, timestamp/offset deltas, header counts) on top of
# key, value and header bytes; this leaves room for it and for the headers a dead letter adds.
RECORD_OVERHEAD = 512


def record_size(value: bytes | None, key: bytes | None = None, headers: dict[str, bytes] | None = None) -> int:
    """Bytes a record takes against the broker's limit, framing overhead excluded."""
    size = len(value or b"") + len(key or b"")
    for name, v in (headers or {}).items():
        size += len(name.encode()) + len(v or b"")
    return size


def check(topic: str, value: bytes | None, key: bytes | None, headers: dict[str, bytes] | None, limit: int) -> None:
    """Refuse a record over ``limit`` bytes before it reaches librdkafka."""
    size = record_size(value, key, headers) + RECORD_OVERHEAD
    if size > limit:
        raise EventTooLarge(f"event for {topic} is {size:,} bytes with key, headers and framing; the limit is "
                            f"{limit:,} (kafka.max_message_bytes): store large data in the artifact store and "
                            f"send its URI instead")


def oversized(value: bytes | None, key: bytes | None, headers: dict[str, bytes] | None, limit: int) -> str | None:
    """Why a fetched record is over the limit, or None when it is within it."""
    size = record_size(value, key, headers)
    if size + RECORD_OVERHEAD <= limit:
        return None
    return f"record is {size:,} bytes, over the {limit:,}-byte limit (kafka.max_message_bytes)"


def fit_dead_letter(value: bytes | None, key: bytes | None, headers: dict[str, bytes],
                    limit: int) -> tuple[bytes, bytes | None, dict[str, bytes]]:
    """A dead letter that fits under ``limit``: value (then key, then original headers) cut as needed."""
    value = value or b""
    if record_size(value, key, headers) + RECORD_OVERHEAD <= limit:
        return value, key, headers
    marked = {**headers, H_TRUNCATED: b"true", H_ORIGINAL_SIZE: str(len(value)).encode()}
    room = limit - RECORD_OVERHEAD - record_size(b"", key, marked)
    if room < 0:   # key or headers alone are too big: keep only the dead-letter headers themselves
        marked = {k: v[:2000] for k, v in marked.items() if k.startswith("modelbus.dlq.")}
        key = (key or b"")[:1024] or None
        room = max(0, limit - RECORD_OVERHEAD - record_size(b"", key, marked))
    return value[:room], key, marked
