"""Metrics scraping, the `models`/`predict`/`rollback` commands and the running server's bookkeeping."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from infra.app.stack.triton import TritonServer, settings_env
from infra.errors import StackError
from schemas.codec import AvroCodec
from serving.errors import ServingError
from serving.metrics_scraper import ScrapeError, parse_samples, run_scraper, scrape_once
from serving.reference_model import SAMPLE

pytestmark = pytest.mark.stack


def test_parse_samples_filters_and_refuses_garbage():
    text = ('# TYPE nv_inference_request_success counter\n'
            'nv_inference_request_success{model="churn",version="1"} 12\n'
            '# TYPE other_metric gauge\nother_metric 3\n')
    assert parse_samples(text, include=("nv_",)) == [
        {"name": "nv_inference_request_success", "labels": {"model": "churn", "version": "1"}, "value": 12.0}]
    assert len(parse_samples(text)) == 2
    with pytest.raises(ScrapeError, match="not Prometheus text format"):
        parse_samples("nv_x{model=churn 1\n")


def test_scrape_of_the_real_server_counts_requests(deployed_churn, model_client, triton):
    for _ in range(3):
        model_client.predict("churn", SAMPLE)
    record = scrape_once(triton.metrics_url)
    AvroCodec().encode("ServerMetrics", record)  # a valid event
    assert record["server"] == triton.metrics_url
    success = [s for s in record["samples"] if s["name"] == "nv_inference_request_success"
               and s["labels"].get("model") == "churn" and s["labels"].get("version") == "1"]
    assert success and success[0]["value"] >= 3
    assert all(s["name"].startswith("nv_") for s in record["samples"])


def test_scraper_loop_publishes_and_survives_a_dead_endpoint(triton):
    published: list[dict] = []
    counts = run_scraper(triton.metrics_url, published.append, interval_s=0.01, max_scrapes=2)
    assert counts == {"scrapes": 2, "failures": 0} and len(published) == 2
    dead = run_scraper("http://127.0.0.1:9/metrics", published.append, interval_s=0.01, max_scrapes=2)
    assert dead == {"scrapes": 0, "failures": 2} and len(published) == 2


def test_running_server_is_found_through_its_pid_file(triton):
    assert triton.is_running() and triton.healthy()
    twin = TritonServer(triton.settings, repository=triton.repository)   # e.g. `modelbus status` in another process
    assert twin.running_pid() == triton.running_pid() == int(triton.pidfile.path.read_text())
    with pytest.raises(StackError, match="already running"):
        twin.start(timeout=5)


@pytest.fixture
def cli_env(serving_settings):
    return settings_env(serving_settings)


def test_cli_models_list_and_predict(deployed_churn, cli_env, tmp_path):
    from infra.app.cli.models import app

    runner = CliRunner()
    listing = runner.invoke(app, ["models", "list"], env=cli_env)
    assert listing.exit_code == 0, listing.output
    assert "churn" in listing.output and "READY" in listing.output
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"age": [25, 63], "income": [32000, 55000], "region": ["EU", "APAC"]}))
    out = runner.invoke(app, ["predict", "churn", "--input", str(rows), "--version", "1"], env=cli_env)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()   # not a terminal: whole tab-separated rows; the inputs only when asked for
    assert lines[1] == "row\tprediction\tconfidence\tprediction id" and "APAC" not in out.output
    ids = [line.split("\t")[3] for line in lines[2:]]
    assert [i.rsplit(":", 1)[1] for i in ids] == ["0", "1"] and len({i.rsplit(":", 1)[0] for i in ids}) == 1
    assert [line.split("\t")[:2] for line in lines[2:]] in ([["0", p0], ["1", p1]] for p0 in ("yes", "no")
                                                             for p1 in ("yes", "no"))
    wide = runner.invoke(app, ["predict", "churn", "--input", str(rows), "--version", "1", "--show-inputs"],
                         env=cli_env)
    assert wide.output.splitlines()[1] == "row\tprediction\tconfidence\tprediction id\tage\tincome\tregion"
    assert wide.output.splitlines()[3].endswith("\t63\t55000\tAPAC")
    doc = json.loads(runner.invoke(app, ["predict", "churn", "--input", str(rows), "--json"], env=cli_env).output)
    assert [r["row"] for r in doc["predictions"]] == [0, 1] and all(0.5 <= r["confidence"] <= 1
                                                                   for r in doc["predictions"])
    assert [r["prediction_id"] for r in doc["predictions"]] == [f"{doc['request_id']}:{i}" for i in (0, 1)]
    keyed = tmp_path / "keyed.json"
    keyed.write_text(json.dumps({"order": ["o-1", "o-2"], "age": [25, 63], "income": [32000, 55000],
                                 "region": ["EU", "APAC"]}))
    doc = json.loads(runner.invoke(app, ["predict", "churn", "--input", str(keyed), "--key-column", "order",
                                         "--json"], env=cli_env).output)
    assert [r["key"] for r in doc["predictions"]] == ["o-1", "o-2"]     # sent as row keys, not as a feature
    rows.write_text("{not json")
    bad = runner.invoke(app, ["predict", "churn", "--input", str(rows)], env=cli_env)
    assert isinstance(bad.exception, ServingError) and "not valid JSON" in str(bad.exception)


def test_cli_rollback_without_older_version_is_a_clear_error(deployed_churn, cli_env):
    from infra.app.cli.models import app

    res = CliRunner().invoke(app, ["rollback", "churn"], env=cli_env)
    assert isinstance(res.exception, ServingError) and "no older version of 'churn'" in str(res.exception)
