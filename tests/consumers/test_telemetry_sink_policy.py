"""The telemetry sink's ClickHouse retries follow the shared outcome policy, bounded by the sink's budget.

``_retrying`` reads only ``retry_budget_s`` from the sink, so it runs here on a namespace: no broker, no
ClickHouse (the stack tests in test_telemetry_sink*.py cover the sink end to end).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from consumers.telemetry_sink import SINK_POLICY, TelemetrySink
from infra.clickhouse.errors import ClickHouseError, ClickHouseUnavailable


def _calls(errors: list[BaseException]):
    made: list[int] = []

    def call():
        made.append(1)
        if len(made) <= len(errors):
            raise errors[len(made) - 1]
        return "stored"
    return call, made


def test_a_clickhouse_that_is_down_is_waited_for_then_the_block_is_stored(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("consumers.telemetry_sink.time.sleep", slept.append)
    call, made = _calls([ClickHouseUnavailable("refused")] * 3 + [ClickHouseError("Code: 241. memory", 241)])
    assert TelemetrySink._retrying(SimpleNamespace(retry_budget_s=60.0), call) == "stored"
    assert len(made) == 5 and slept == [SINK_POLICY.decide(ClickHouseUnavailable("x"), n).delay_s
                                        for n in range(1, 5)]


def test_a_refused_block_is_raised_at_once_for_the_fallback():
    call, made = _calls([ClickHouseError("Code: 27. cannot parse", 27)])
    with pytest.raises(ClickHouseError, match="cannot parse"):
        TelemetrySink._retrying(SimpleNamespace(retry_budget_s=60.0), call)
    assert len(made) == 1


def test_the_sink_budget_ends_the_retries(monkeypatch):
    monkeypatch.setattr("consumers.telemetry_sink.time.sleep", lambda s: None)
    call, made = _calls([ClickHouseUnavailable("refused")] * 100)
    with pytest.raises(ClickHouseUnavailable):
        TelemetrySink._retrying(SimpleNamespace(retry_budget_s=0.1), call)   # first delay 0.2 s > budget
    assert len(made) == 1
