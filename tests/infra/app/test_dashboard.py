"""The monitoring dashboard: served page, filters bound as parameters, charts drawn in a real browser.

Rows go into a private database on the embedded ClickHouse owner (a real
subprocess), the page is served by ``DashboardServer`` on loopback and rendered
by headless Chromium (Debian's ``chromium`` package); the browser tests skip
when it is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from infra.app.cli.main import app
from infra.app.dashboard import PANELS, DashboardServer, Filters
from infra.clickhouse import HttpStore
from infra.clickhouse.migrate import migrate
from infra.clickhouse.rows import write_events
from schemas.codec import AvroCodec
from schemas.events import new_header
from serving.telemetry_losses import loss_report
from tests.clickhouse_db import insert_telemetry

pytestmark = pytest.mark.stack

NOW = datetime.now(UTC).replace(second=30, microsecond=0)
ODD = "o'brien <script>alert(1)</script>"          # a real model name full of quotes and markup
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                    "(Debian: apt-get install -y chromium; infra/bootstrap.sh test installs it)")
# Minutes with traffic per series: churn v1 in 6 minutes, churn v2 in 3, ODD v1 in 2.
TRAFFIC = {("churn", 1): [(m, 4 + m) for m in range(1, 7)], ("churn", 2): [(m, 2) for m in (1, 2, 3)],
           (ODD, 1): [(2, 3), (3, 3)]}


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def _decoded(events: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Events as a consumer sees them: through the wire, so schema defaults fill the fields a test leaves out."""
    codec = AvroCodec()
    return [(t, codec.decode(codec.encode(t, v), t).value) for t, v in events]


def _header(producer: str, at: datetime) -> dict:
    h = new_header(producer)
    h["event_time"] = _us(at)
    return h


@pytest.fixture(scope="module")
def store(clickhouse_owner, base_settings):
    settings = base_settings.with_overrides(clickhouse={"database": f"t_{uuid.uuid4().hex[:12]}"})
    s = HttpStore(clickhouse_owner.url, database=settings.clickhouse.database)
    migrate(s, settings.clickhouse)
    rows = []
    for (model, version), minutes in TRAFFIC.items():
        for m, n in minutes:
            for i in range(n):
                at = NOW - timedelta(minutes=m, seconds=i)
                rows.append({"header": _header("serving.triton", at), "request_id": f"r{i}", "model_name": model,
                             "model_version": version, "received_at": _us(at) - 800 * (i + 1),
                             "completed_at": _us(at), "latency_us": 800 * (i + 1), "batch_size": 1,
                             "prediction": "yes" if i % 3 else "no", "confidence": 0.9,
                             "status": "error" if (version == 2 and i == 0) else "ok"})
    insert_telemetry(s, (rows))
    write_events(s, _decoded([
        ("ModelDeployed", {"header": _header("serving.deployer", NOW - timedelta(minutes=4)), "model_name": "churn",
                           "model_version": 2, "previous_version": 1, "action": "promote", "artifact_uri": "a",
                           "checksum": "c", "backend": "python", "repository_uri": "r", "primary_metric": "roc_auc",
                           "metric_value": 0.93, "champion_metric": 0.91, "metrics": {}, "checks": [],
                           "run_id": "run-7", "dataset_version": "v7"}),
        ("DeploymentRejected", {"header": _header("serving.deployer", NOW - timedelta(minutes=2)),
                                "model_name": "churn", "model_version": 3, "stage": "gate",
                                "reason": "worse than champion", "champion_version": 2, "primary_metric": "roc_auc",
                                "metric_value": 0.8, "champion_metric": 0.93, "checks": [
                                    {"name": "beats_champion", "passed": False, "value": 0.8, "threshold": 0.93,
                                     "detail": "0.8 < 0.93"}]}),
        *[("DriftDetected", {"header": _header("monitoring.drift", NOW - timedelta(minutes=k)), "model_name": "churn",
                             "model_version": 2, "feature": f, "window_start": _us(NOW - timedelta(minutes=k + 5)),
                             "window_end": _us(NOW - timedelta(minutes=k)), "psi": psi, "test": "ks",
                             "statistic": 0.3, "p_value": 1e-4, "psi_threshold": 0.2, "p_value_threshold": 0.01,
                             "sample_size": 400, "action": "none"})
          for k, f, psi in ((1, "age", 0.4), (2, "region", 0.7))],
        ("ServerMetrics", loss_report("churn-0-v1", Counter({                  # telemetry the model server lost
            (int((NOW - timedelta(minutes=m)).timestamp()) // 60 * 60, kind): n
            for m, kind, n in ((1, "dropped", 7), (2, "dropped", 3), (2, "failed", 1))}), "churn")),
    ]))
    yield s
    s.command(f"DROP DATABASE IF EXISTS {s.database} SYNC")
    s.close()


@pytest.fixture(scope="module")
def server(store):
    srv = DashboardServer(store, port=0).start()
    yield srv
    srv.stop()


def get(server, **query) -> tuple[int, dict, str]:
    try:
        with urllib.request.urlopen(server.url + ("?" + urlencode(query) if query else ""), timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


class Dom(HTMLParser):
    """What a test needs from a page: per panel, its row count, and the markers/bars of each drawn series."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.rows: dict[str, int] = {}
        self.svgs: set[str] = set()
        self.points: Counter = Counter()     # '<panel>-series-<label>' -> markers drawn
        self.bars: Counter = Counter()       # '<panel>-bar-<label>' -> bars drawn
        self.texts: list[str] = []
        self._groups: list[str | None] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "data-panel" in a:
            self.rows[a["data-panel"]] = int(a["data-rows"])
        if tag == "svg" and a.get("aria-label"):
            self.svgs.add(a["aria-label"])
        if tag == "g":
            self._groups.append(a.get("id"))
            gid = a.get("id") or ""
            if "-bar-" in gid:
                self.bars[gid.rsplit("-", 1)[0]] += 1
        if tag == "use":
            series = next((g for g in reversed(self._groups) if g and "-series-" in g), None)
            if series:
                self.points[series] += 1

    def handle_endtag(self, tag):
        if tag == "g" and self._groups:
            self._groups.pop()

    def handle_data(self, data):
        self.texts.append(data)


def test_page_has_every_panel_with_the_inserted_numbers(server):
    status, headers, text = get(server)
    assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    dom = Dom(text)
    assert set(dom.rows) == {p.name for p in PANELS}
    assert dom.svgs == {p.name for p in PANELS if p.kind != "table"}
    # One marker per minute with traffic, per series (the per-minute view aggregates in ClickHouse).
    assert dom.points["requests_per_minute-series-churn_v1"] == 6
    assert dom.points["requests_per_minute-series-churn_v2"] == 3
    # Lost telemetry of one process in the two minutes it reported, next to the traffic it is missing from.
    assert dom.rows["telemetry_losses"] == 2 and dom.points["telemetry_losses-series-churn-0-v1_dropped"] == 2
    assert dom.points["latency_percentiles-series-churn_v2_p99"] == 3
    assert dom.bars["prediction_distribution-bar-churn_v1"] == 2              # 'yes' and 'no'
    assert dom.points["drift_events-series-churn_age"] == 1 and dom.rows["drift_events"] == 2
    assert dom.rows["recent_deployments"] == 1 and dom.rows["recent_rejections"] == 1
    assert "<script>" not in text and "&lt;script&gt;" in text               # the odd model name is escaped
    assert "<script" not in text and "http-equiv" not in text


def test_filters_are_bound_not_spliced(server):
    dom = Dom(get(server, model=ODD, range="15m")[2])
    assert dom.points["requests_per_minute-series-o_brien_script_alert_1_script_v1"] == 2
    assert dom.points["requests_per_minute-series-churn_v1"] == 0 and dom.rows["recent_deployments"] == 0
    for hostile in ("x' OR '1'='1", "churn') OR 1=1 --", "churn\\", "{model:String}"):
        status, _, text = get(server, model=hostile)
        dom = Dom(text)
        assert status == 200 and set(dom.rows.values()) == {0}, hostile    # matches nothing, breaks nothing
    status, _, text = get(server, model="<b>x</b>\"'")
    assert status == 200 and "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;&quot;&#x27;" in text
    assert get(server, range="1y; DROP TABLE models")[0] == 400
    assert get(server, limit="0")[0] == 400
    assert get(server, model="x" * 600)[0] == 400
    assert get(server)[0] == 200                                              # nothing was dropped
    assert urllib.request.urlopen(server.url + "healthz", timeout=10).read() == b"ok\n"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(server.url + "etc/passwd", timeout=10)


def test_loopback_only(store):
    from infra.app.dashboard import DashboardError

    with pytest.raises(DashboardError):
        DashboardServer(store, host="0.0.0.0")
    assert Filters.parse({"model": ["churn"], "range": ["6h"]}) == Filters("churn", "6h", 50)


def chromium(*args: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=90)


@needs_chromium
def test_served_page_renders_charts_in_chromium(server, tmp_path):
    out = chromium("--dump-dom", server.url + "?" + urlencode({"model": "churn", "range": "1h"}), tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = Dom(out.stdout)                       # the DOM after the browser parsed and laid out the page
    assert dom.svgs == {p.name for p in PANELS if p.kind != "table"}
    assert dom.points["requests_per_minute-series-churn_v1"] == 6
    assert dom.points["error_rate-series-churn_v2"] == 3
    assert dom.bars["model_versions_serving-bar-churn"] == 2                   # v1 and v2
    assert not any(k.startswith("requests_per_minute-series-o_brien") for k in dom.points)   # filtered out


@needs_chromium
def test_once_writes_a_self_contained_page_that_draws_offline(store, clickhouse_owner, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    env.update({"MODELBUS_CLICKHOUSE__URL": clickhouse_owner.url, "MODELBUS_CLICKHOUSE__DATABASE": store.database})
    target = tmp_path / "out" / "dashboard.html"
    res = CliRunner().invoke(app, ["dashboard", "--once", str(target), "--range", "1h"], env=env)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(target.resolve())
    html = target.read_text()
    assert "<script" not in html and " src=" not in html and "href=\"http" not in html   # nothing to fetch
    assert Dom(html).points["requests_per_minute-series-churn_v1"] == 6

    shot = tmp_path / "shot.png"
    out = chromium("--window-size=1400,2400", "--hide-scrollbars", f"--screenshot={shot}", target.as_uri(),
                   tmp_path=tmp_path)
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32).reshape(-1, 3)
    near = lambda rgb: int((np.abs(pixels - rgb).sum(axis=1) < 30).sum())  # noqa: E731
    # The first two series colors (matplotlib's tab:blue and tab:orange) are painted: lines, markers, bars.
    assert near((31, 119, 180)) > 2000 and near((255, 127, 14)) > 500
