"""The UI in a real browser: Debian's headless Chromium driven by Playwright, asserting on what a person sees.

Screenshots of every page are saved under ``test-artifacts/ui/`` (``MODELBUS_TEST_ARTIFACTS`` moves it).
Every test also fails on a console error (a Content-Security-Policy refusal among them) or a request to
another origin: the UI must work with no internet.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.clickhouse.rows import write_events
from tests.infra.app.ui.conftest import DEAD, NOW, REQUEST_ID, SERVED, _decoded, _model

pytestmark = pytest.mark.stack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium; "
                "infra/bootstrap.sh test installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
SHOTS = Path(os.environ.get("MODELBUS_TEST_ARTIFACTS", "test-artifacts")) / "ui"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, ui_server, request):
    """A fresh page that records console errors and every request; checked after the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("request", lambda r: None if r.url.startswith(ui_server.url) else problems.append(f"offsite: {r.url}"))
    pg.problems = problems          # a test that expects an error page clears what it expects
    yield pg
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert problems == []


def _open(page, server, path: str) -> None:
    page.goto(server.url.rstrip("/") + path)
    page.wait_for_load_state("networkidle")


def _row(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def test_models_page_shows_states_and_gate_checks(page, ui_server):
    _open(page, ui_server, "/")
    assert page.title() == "Models and their versions · ModelBus"
    assert "serving" in _row(page, 'tr[data-model="churn"][data-version="2"] [data-testid=state]')
    rejected = _row(page, 'tr[data-model="churn"][data-version="3"]')
    assert "rejected" in rejected and "✗ beats_champion" in rejected and "worse than the champion" in rejected


def test_live_chart_time_axis_spans_the_chosen_range_and_counts_the_requests(page, ui_server):
    _open(page, ui_server, "/live?model=churn&range=15m")
    chart = page.locator("#chart-requests_per_minute .main-svg").first
    chart.wait_for()
    start, end = page.evaluate("document.getElementById('chart-requests_per_minute')._fullLayout.xaxis.range")
    start, end = (datetime.fromisoformat(v).replace(tzinfo=UTC) for v in (start, end))
    now = datetime.now(UTC)
    assert abs(end - now) < timedelta(minutes=2) and abs((end - start) - timedelta(minutes=15)) < timedelta(seconds=5)
    ticks = page.locator("#chart-requests_per_minute .xtick text").all_text_contents()
    assert ticks and not any(str(y) in t for t in ticks for y in range(2020, now.year)), ticks
    total = page.evaluate("document.getElementById('chart-requests_per_minute').data"
                          ".reduce((s, t) => s + t.y.reduce((a, b) => a + b, 0), 0)")
    assert total == sum(n for _, n in SERVED[2])
    quality = page.evaluate("document.getElementById('chart-live_quality').data.map(t => t.name)")
    assert quality == ["churn v2 realised", "churn v2 estimated"]


def test_ticked_runs_are_compared_side_by_side(page, ui_server):
    _open(page, ui_server, "/runs")
    page.check('input[value="run-a"]')
    page.check('input[value="run-b"]')
    page.click("[data-testid=compare]")
    page.wait_for_url("**/compare?**")
    page.wait_for_load_state("networkidle")
    assert page.locator("[data-testid=page-title]").inner_text() == "2 runs side by side"
    runs = page.locator("[data-testid=metrics] thead th").all_inner_texts()[1:]     # in the order ticked
    values = _row(page, 'tr[data-metric="roc_auc"]').split()[-2:]
    assert sorted(runs) == ["run-a", "run-b"] and dict(zip(runs, values)) == {"run-a": "0.91", "run-b": "0.93"}
    page.locator("#chart-curves .main-svg").first.wait_for()
    assert page.evaluate("document.getElementById('chart-curves').data.length") == 1   # only run-a has epochs


def test_lineage_of_a_prediction_is_drawn_as_a_graph(page, ui_server):
    _open(page, ui_server, f"/lineage?request_id={REQUEST_ID}")
    page.locator("#chart-lineage .main-svg").first.wait_for()
    labels = page.locator("#chart-lineage .textpoint text").evaluate_all(
        "els => els.map(e => e.querySelector('tspan').textContent)")    # the first line of each node: its kind
    assert labels == ["upstream event", "dataset version", "training run",
                                                         "model", "deployment", "prediction"]
    assert REQUEST_ID in _row(page, 'tr[data-kind="prediction"]')


def test_dead_letters_show_counts_and_reasons(page, ui_server):
    _open(page, ui_server, "/dlq")
    row = page.locator('tr[data-topic$="training.requested.dlq"] [data-testid=count]')
    assert row.inner_text() == str(len(DEAD))
    assert "n_trials must be between 1 and 64" in page.locator("[data-testid=dlq-latest]").first.inner_text()


def test_a_bad_filter_shows_a_message(page, ui_server):
    _open(page, ui_server, "/runs?status=exploded")
    assert "unknown status 'exploded'" in page.locator("[data-testid=error]").inner_text()
    assert page.problems == ["console error: Failed to load resource: the server responded with a status of 400 "
                             "(Bad Request)"]
    page.problems.clear()


def test_the_page_refreshes_itself_when_a_model_is_registered(page, ui_server, ui_store):
    _open(page, ui_server, "/")
    assert page.locator('tr[data-version="4"]').count() == 0
    write_events(ui_store, _decoded([_model(4, "run-b", 0.95, NOW)]))
    page.locator('tr[data-model="churn"][data-version="4"]').wait_for(timeout=15_000)   # refresh_s=1, no reload
    assert "awaiting gate" in _row(page, 'tr[data-model="churn"][data-version="4"]')
