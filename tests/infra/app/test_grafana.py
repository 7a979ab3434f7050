"""The generated Grafana dashboard: in sync with the named SQL, and every panel query runs on the engine.

Grafana itself cannot run here, so the test does what Grafana and the
ClickHouse plugin do to a panel's SQL — percent-encode a variable
(``encodeURIComponentStrict``) and expand ``$__fromTime_ms`` — except that the
values are bound as parameters instead of spliced, and runs the result on the
embedded engine with real rows.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import yaml

from infra.app.dashboard import grafana
from infra.app.dashboard.panels import PANELS
from infra.clickhouse import ChdbStore
from infra.clickhouse.dashboards import load_dashboard_queries
from infra.clickhouse.engine import ChdbEngine
from infra.clickhouse.migrate import migrate
from infra.clickhouse.rows import write_events
from schemas.events import new_header
from tests.clickhouse_db import insert_telemetry

NOW = datetime.now(UTC)


def grafana_to_bound(sql: str) -> str:
    """Grafana's text substitutions, as bound placeholders (percent-encoded values, epoch milliseconds)."""
    sql = sql.replace("'${model:percentencode}'", "{g_model:String}")
    sql = sql.replace("'${limit:percentencode}'", "{g_limit:String}")
    sql = sql.replace("$__fromTime_ms", "fromUnixTimestamp64Milli({g_from_ms:Int64})")
    leftover = re.findall(r"\$\{?\w+", sql)
    assert not leftover, f"unhandled Grafana macros/variables: {leftover}"
    return sql


def encode_uri_component_strict(value: str) -> str:
    """Grafana's ``percentencode`` format: only A-Z a-z 0-9 - _ . ~ stay as they are."""
    return quote(value, safe="-_.~")


@pytest.fixture(scope="module")
def store(tmp_path_factory, base_settings):
    engine = ChdbEngine(tmp_path_factory.mktemp("grafana-chdb"))
    settings = base_settings.with_overrides(clickhouse={"database": f"t_{uuid.uuid4().hex[:12]}"})
    s = ChdbStore(None, settings.clickhouse.database, engine=engine)
    migrate(s, settings.clickhouse)
    yield s
    engine.close()


def _telemetry(model: str, version: int, minutes_ago: int, prediction: str) -> dict:
    us = int((NOW - timedelta(minutes=minutes_ago)).timestamp() * 1_000_000)
    h = new_header("serving.triton")
    h["event_time"] = us
    return {"header": h, "request_id": "r", "model_name": model, "model_version": version, "received_at": us - 900,
            "completed_at": us, "latency_us": 900, "batch_size": 1, "prediction": prediction, "confidence": 0.7,
            "status": "ok"}


def test_dashboard_json_is_generated_from_the_named_sql():
    on_disk = grafana.DASHBOARD_FILE.read_text(encoding="utf-8")
    assert on_disk == grafana.render(), "stale: run `python -m infra.app.dashboard.grafana`"
    assert grafana.main(["--check"]) == 0
    doc = json.loads(on_disk)
    queries = load_dashboard_queries()
    assert [p["title"] for p in doc["panels"]] == [p.title for p in PANELS]
    assert {p.name for p in PANELS} == set(queries)                  # every named query has a panel
    for panel, spec in zip(doc["panels"], PANELS):
        raw = panel["targets"][0]["rawSql"]
        assert "{" + "model:String}" not in raw and "{since:" not in raw   # no ClickHouse placeholder left
        # The named query is there, verbatim apart from its placeholders.
        body = grafana.to_grafana_sql(queries[spec.name])
        assert body in raw
        assert panel["datasource"] == grafana.DATASOURCE == panel["targets"][0]["datasource"]


def test_stale_file_is_reported(tmp_path):
    out = tmp_path / "d.json"
    out.write_text("{}")
    assert grafana.main(["--check", "--output", str(out)]) == 1
    assert grafana.main(["--output", str(out)]) == 0 and grafana.main(["--check", "--output", str(out)]) == 0


def test_every_panel_query_runs_with_hostile_variables(store):
    insert_telemetry(store, (
        [_telemetry("churn", 1, m, "yes") for m in range(1, 6)] + [_telemetry("o'brien\\", 2, 2, "no")]))
    h = new_header("monitoring.drift")
    h["event_time"] = int((NOW - timedelta(minutes=3)).timestamp() * 1e6)
    write_events(store, [("DriftDetected", {
        "header": h, "model_name": "churn", "model_version": 1, "feature": "age", "window_start": h["event_time"],
        "window_end": h["event_time"], "psi": 0.5, "test": "ks", "statistic": 0.3, "p_value": 0.001,
        "psi_threshold": 0.2, "p_value_threshold": 0.01, "sample_size": 300, "action": "none"})])
    doc = grafana.build_dashboard()
    since_ms = int((NOW - timedelta(hours=1)).timestamp() * 1000)

    def run(panel, model: str) -> list[dict]:
        sql = grafana_to_bound(panel["targets"][0]["rawSql"])
        params = {"g_model": encode_uri_component_strict(model), "g_limit": "50", "g_from_ms": since_ms}
        return store.query_rows(sql, {k: v for k, v in params.items() if "{" + k + ":" in sql})

    by_title = {p["title"]: p for p in doc["panels"]}
    for panel in doc["panels"]:
        run(panel, "")                                          # all panels run on the engine
        assert run(panel, "x') OR 1=1 --") == []               # a hostile value matches nothing, breaks nothing
    requests = run(by_title["Requests per minute"], "")
    assert {r["series"] for r in requests} == {"churn v1", "o'brien\\ v2"}
    assert sum(r["requests"] for r in requests if r["series"] == "churn v1") == 5
    assert {r["series"] for r in run(by_title["Requests per minute"], "o'brien\\")} == {"o'brien\\ v2"}
    assert [r["label"] for r in run(by_title["Prediction distribution"], "churn")] == ["churn v1 yes"]
    drift = run(by_title["Drift events (PSI)"], "churn")
    assert [(r["series"], r["psi"]) for r in drift] == [("churn age", 0.5)]
    assert store.query_rows("SELECT count() AS n FROM inference_telemetry") == [{"n": 6}]


def test_provisioning_reads_the_connection_from_the_environment():
    ds = yaml.safe_load((grafana.DEPLOY_DIR / "provisioning/datasources/clickhouse.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == grafana.DATASOURCE["type"] and source["uid"] == grafana.DATASOURCE["uid"]
    assert source["jsonData"]["host"] == "${CLICKHOUSE_HOST}" and source["jsonData"]["port"] == "${CLICKHOUSE_PORT}"
    assert source["secureJsonData"]["password"] == "${CLICKHOUSE_PASSWORD}"
    providers = yaml.safe_load((grafana.DEPLOY_DIR / "provisioning/dashboards/modelbus.yaml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
