"""The UI's pages over HTTP: the seeded numbers, refused filters as messages, bound values, the error mapping.

Real parts: the embedded ClickHouse owner and the session's broker (see conftest); the browser tests are in
``test_browser.py``.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest

from infra.app.ui import UIServer
from infra.app.ui.server import FRAGMENT_HEADER
from tests.clickhouse_db import migrated_store, private_settings
from tests.infra.app.ui.conftest import DEAD, LABELLED, ODD, REQUEST_ID, SERVED

pytestmark = pytest.mark.stack


def get(server, path: str, headers: dict | None = None, **query) -> tuple[int, str]:
    url = server.url.rstrip("/") + path + ("?" + urlencode(query, doseq=True) if query else "")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Rows(HTMLParser):
    """Table rows by their data-* attribute (``data-model``, ``data-run``, ...): the cells' text."""

    def __init__(self, text: str, key: str):
        super().__init__(convert_charrefs=True)
        self.key, self.rows, self._cur = key, {}, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and self.key in a:
            self._cur = a[self.key] + ("/" + a["data-version"] if "data-version" in a else "")
            self.rows[self._cur] = ""

    def handle_endtag(self, tag):
        if tag == "tr":
            self._cur = None

    def handle_data(self, data):
        if self._cur is not None:
            self.rows[self._cur] += " " + data.strip()


def test_models_page_shows_each_version_with_its_state_and_gate_checks(ui_server):
    code, body = get(ui_server, "/")
    assert code == 200
    rows = Rows(body, "data-model").rows
    assert "serving" in rows["churn/2"] and "retired" in rows["churn/1"] and "rejected" in rows["churn/3"]
    assert "worse than the champion" in rows["churn/3"] and "✗ beats_champion" in rows["churn/3"]
    assert "✓ beats_champion" in rows["churn/2"]
    assert "awaiting gate" in rows[f"{ODD}/1"]
    assert "o&#39;brien &lt;b&gt;x&lt;/b&gt;" in body and "<b>x</b>" not in body   # escaped, never markup


def test_runs_page_filters_by_status_and_the_values_are_bound(ui_server):
    rows = Rows(get(ui_server, "/runs")[1], "data-run").rows
    assert set(rows) == {"run-a", "run-b", "run-c", "run-d"}
    assert "CUDA out of memory" in rows["run-c"]
    assert set(Rows(get(ui_server, "/runs", status="failed")[1], "data-run").rows) == {"run-c"}
    code, body = get(ui_server, "/runs", model="churn' OR 1=1 --")     # a value, not SQL
    assert code == 200 and Rows(body, "data-run").rows == {} and "No training run matches" in body


@pytest.mark.parametrize("path,query,message", [
    ("/runs", {"status": "exploded"}, "unknown status 'exploded'"),
    ("/runs", {"limit": "lots"}, "limit must be a whole number"),
    ("/live", {"range": "3y"}, "unknown range '3y'"),
    ("/lineage", {"model": "churn", "version": "two"}, "version must be a positive whole number"),
    ("/compare", {}, "pick one run to show"),
    ("/", {"model": "x" * 600}, "model is longer than 512 characters"),
])
def test_a_bad_filter_is_a_400_with_the_reason_never_a_trace(ui_server, path, query, message):
    code, body = get(ui_server, path, **query)
    assert code == 400 and message in body.replace("&#39;", "'")
    assert "Traceback" not in body and 'data-testid="error"' in body


def test_compare_puts_parameters_metrics_baselines_and_slices_side_by_side(ui_server):
    code, body = get(ui_server, "/compare", run=["run-a", "run-b", "nope"])
    assert code == 200
    metrics = Rows(body, "data-metric").rows
    assert "0.41" in metrics["best_val_loss"] and "0.38" in metrics["best_val_loss"]
    assert metrics["baseline:logistic roc_auc"].split()[-2:] == ["0.88", "0.88"]
    assert "No run with id nope" in body and "region=north (roc_auc)" in body
    assert re.search(r'class="diff"><th>lr</th><td>0.01</td><td>0.003</td>', body)   # differing params marked
    assert 'data-chart="chart-curves"' in body                                         # run-a has epochs


def test_lineage_of_a_prediction_runs_from_the_dataset_event_to_the_request(ui_server):
    code, body = get(ui_server, "/lineage", request_id=REQUEST_ID)
    assert code == 200
    steps = Rows(body, "data-kind").rows
    assert list(steps) == ["upstream event", "dataset version", "training run", "model", "deployment",
                           "prediction"]
    assert "churn v1" in steps["dataset version"] and "run-b" in steps["training run"]
    assert "churn v2" in steps["model"] and REQUEST_ID in steps["prediction"]
    code, body = get(ui_server, "/lineage", model="churn", version="3")
    assert "rejected (gate: worse than the champion)" in body and "failed: beats_champion" in body
    assert "No served request with id zzz" in get(ui_server, "/lineage", request_id="zzz")[1]


def test_live_page_draws_every_standard_panel_and_the_dead_letters_are_counted(ui_server):
    code, body = get(ui_server, "/live", model="churn", range="1h")
    assert code == 200
    assert 'data-panel="requests_per_minute" data-rows="5"' in body   # 5 minutes of churn v2 traffic
    assert f'"y":[{",".join(str(n) for _, n in sorted(SERVED[2], reverse=True))}]' in body.replace(" ", "")
    # live quality once outcomes exist: 8 labelled 'yes', half of them predicted so; estimate 0.5 + 0.4 * 0.6
    quality = Rows(body, "data-quality").rows["churn/2"].split()
    assert quality[quality.index("v2") + 1:] == ["30", str(LABELLED), "0.5", "0.74"]   # no AUC: one class
    code, body = get(ui_server, "/dlq")
    counts = Rows(body, "data-topic").rows
    (topic,) = [t for t in counts if t.endswith("training.requested.dlq")]
    assert counts[topic].split() == [topic, str(len(DEAD))]
    assert "n_trials must be between 1 and 64" in body and "undecodable" in body


def test_a_refresh_asks_for_the_content_only(ui_server):
    code, body = get(ui_server, "/runs", headers={FRAGMENT_HEADER: "1"})
    assert code == 200 and "<html" not in body and 'data-run="run-a"' in body


def test_an_empty_platform_says_what_to_do(clickhouse_owner, kafka_settings):
    with migrated_store(private_settings(kafka_settings, clickhouse_owner.url)) as empty:
        server = UIServer(empty, lambda: [], port=0).start()
        try:
            assert "No model registered yet" in get(server, "/")[1]
            assert "No traffic in the last 1h" in get(server, "/live")[1]
            assert "No dead-letter topic exists yet" in get(server, "/dlq")[1]
        finally:
            server.stop()


def test_a_query_clickhouse_refuses_is_a_502_with_its_message(clickhouse_owner, kafka_settings):
    with migrated_store(private_settings(kafka_settings, clickhouse_owner.url)) as store:
        store.command(f"DROP DATABASE {store.database}")        # every query now fails inside ClickHouse
        server = UIServer(store, lambda: [], port=0).start()
        try:
            code, body = get(server, "/runs")
            assert code == 502 and "ClickHouse refused the query" in body and "Traceback" not in body
            assert store.database in body                     # ClickHouse's own message names what is missing
        finally:
            server.stop()
