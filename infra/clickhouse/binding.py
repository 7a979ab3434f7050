"""Bound query parameters, identical for the in-process and the HTTP driver.

Values are never spliced into SQL: every parameter must be used by a
``{name:Type}`` placeholder and travels separately (chdb ``params`` or the HTTP
``param_<name>`` fields), where ClickHouse parses it as a value of ``Type``.
Both drivers format values with clickhouse-connect's ``format_bind_value`` so a
query behaves the same whichever engine answers it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Mapping

from clickhouse_connect.driver.binding import format_bind_value

from infra.clickhouse.errors import ClickHouseError

PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^{}]+?)\s*\}")


def _normalize(value: Any) -> Any:
    """Datetimes become microsecond UTC text (format_bind_value would drop the microseconds)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_normalize(v) for v in value)
    if isinstance(value, dict):
        return {_normalize(k): _normalize(v) for k, v in value.items()}
    return value


def placeholders(sql: str) -> dict[str, str]:
    """Placeholder name → declared ClickHouse type, in the order they appear."""
    return {m.group(1): m.group(2) for m in PLACEHOLDER.finditer(sql)}


def check_params(sql: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Refuse parameters without a ``{name:Type}`` placeholder (they would otherwise be spliced)."""
    if not params:
        return {}
    used = placeholders(sql)
    unused = [k for k in params if k not in used]
    if unused:
        raise ClickHouseError(
            f"query parameter(s) {', '.join(sorted(unused))} have no {{name:Type}} placeholder in the SQL; "
            "parameters are always bound, never spliced")
    return {k: _normalize(v) for k, v in params.items()}


def encode_params(sql: str, params: Mapping[str, Any] | None) -> dict[str, str]:
    """Parameters as ClickHouse text (the form of HTTP ``param_<name>`` values), keyed by name."""
    return {k: format_bind_value(v, UTC) for k, v in check_params(sql, params).items()}
