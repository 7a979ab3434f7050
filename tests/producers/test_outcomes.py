"""Reporting outcomes: checked before anything is published, from the SDK and from a file with the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest
from typer.testing import CliRunner

from infra.app.stack.triton import settings_env
from infra.kafka import topics as T
from infra.kafka.reader import TopicReader
from producers.outcomes import InvalidOutcomeError, outcome, read_outcomes
from producers.sdk import ModelBus


@pytest.mark.parametrize("fields,message", [
    ({"prediction_id": "r:0"}, "exactly one of label"),
    ({"prediction_id": "r:0", "key": "k", "label": "yes"}, "exactly one of prediction_id and key"),
    ({"label": "yes"}, "exactly one of prediction_id and key"),
    ({"prediction_id": "r", "label": "yes"}, "is not '<request_id>:<row>'"),
    ({"key": "k", "value": float("nan"), "label": None}, "exactly one of label"),
    ({"key": "k", "value": float("inf")}, "finite"),
    ({"key": "k", "label": "yes", "colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_a_malformed_outcome_is_refused_with_the_reason(fields, message):
    with pytest.raises(InvalidOutcomeError, match=message):
        outcome({"model_name": "churn", **fields})


def test_a_file_with_one_bad_row_fails_naming_the_row(tmp_path):
    path = tmp_path / "truth.csv"
    pd.DataFrame({"prediction_id": ["r:0", "r:1", "r:2"], "label": ["yes", None, "no"]}).to_csv(path, index=False)
    with pytest.raises(InvalidOutcomeError, match="truth.csv row 2: .*exactly one of label"):
        read_outcomes(path, model_name="churn")
    path.write_text("prediction_id,label,mood\nr:0,yes,happy\n")
    with pytest.raises(InvalidOutcomeError, match="unknown column"):
        read_outcomes(path, model_name="churn")


def _published(settings, n: int) -> list[dict]:
    """The topic's first ``n`` events (it has several partitions: sorted by key, not by arrival)."""
    import time

    reader = TopicReader(settings, [settings.topic(T.OUTCOMES_OBSERVED)], start="beginning")
    events: list[dict] = []
    deadline = time.monotonic() + 30
    try:
        while len(events) < n and time.monotonic() < deadline:
            events += [env.value for env in reader.poll(1000, timeout=1.0)]
    finally:
        reader.close()
    return sorted(events, key=lambda e: (e["key"] or "", e["prediction_id"] or ""))


@pytest.mark.stack
def test_outcome_push_publishes_one_event_per_row(isolated_settings, tmp_path, monkeypatch):
    from infra.app.cli.main import app

    path = tmp_path / "truth.parquet"
    pd.DataFrame({"key": ["o-1", "o-2"], "value": [3.5, 7.0],
                  "observed_at": [datetime(2026, 12, 1, tzinfo=UTC)] * 2}).to_parquet(path)
    env = settings_env(isolated_settings)
    out = CliRunner().invoke(app, ["outcome", "push", str(path), "--model", "price", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["published"] == 2
    events = _published(isolated_settings, 2)
    assert [(e["model_name"], e["key"], e["value"], e["source"]) for e in events] == [
        ("price", "o-1", 3.5, "truth.parquet"), ("price", "o-2", 7.0, "truth.parquet")]
    assert all(e["observed_at"] == datetime(2026, 12, 1, tzinfo=UTC) for e in events)

    bad = tmp_path / "bad.csv"
    bad.write_text("key,label\no-1,yes\n,no\n")
    refused = CliRunner().invoke(app, ["outcome", "push", str(bad), "--model", "churn"], env=env)
    assert refused.exit_code != 0 and "bad.csv row 2" in str(refused.exception or refused.output)
    with ModelBus(isolated_settings) as mb:
        ids = mb.report_outcomes([{"model_name": "churn", "prediction_id": f"r:{i}", "label": "yes"}
                                  for i in range(3)])
    assert len(set(ids)) == 3 and len(_published(isolated_settings, 5)) == 5
