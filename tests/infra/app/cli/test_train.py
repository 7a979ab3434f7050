"""``modelbus train`` and ``modelbus runs`` through the real entry point (``infra.app.cli.main``).

The stack parts are real: the session's tansu broker, a training consumer and
the metadata sink in threads of this process, and the embedded ClickHouse owner
subprocess (our stand-in for a ClickHouse server, which cannot be installed here).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid

import pytest

from infra.app.stack.triton import settings_env
from infra.kafka import topics as T

pytestmark = pytest.mark.stack


def run_cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """Run ``modelbus ARGS`` in this process; (exit code, stdout, stderr)."""
    from infra.app.cli.errors import run_cli as entry
    from infra.app.cli.main import app

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["modelbus", *args])
    code = entry(app)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli_settings(train_settings, monkeypatch):
    """The test's settings, handed to the CLI the way an operator would: as environment variables."""
    for key, value in settings_env(train_settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "240")
    return train_settings


@pytest.fixture
def stored_dataset(cli_settings, churn_data):
    """A dataset in the store, not announced (so nothing trains it until the CLI asks)."""
    from infra.storage.factory import store_from_settings
    from producers.datasets import push_dataset

    return push_dataset(churn_data(), {"name": "churn", "label": "churned", "slice_by": ["region"]},
                        store=store_from_settings(cli_settings), publisher=None, topic="unused")


def test_train_refuses_inconsistent_requests_before_publishing(cli_settings, stored_dataset, capsys, monkeypatch,
                                                               tmp_path, tail):
    requests = tail(cli_settings, T.TRAINING_REQUESTED)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "typo.json").write_text(json.dumps({"epochz": 3}))
    (tmp_path / "space.json").write_text(json.dumps({"lr": {"type": "float", "low": 0.001, "high": 0.1}}))
    cases = [
        (["train", "churn", "--search", str(tmp_path / "space.json")], "--search and --trials go together"),
        (["train", "churn", "--spec", str(tmp_path / "bad.json")], "is not valid JSON"),
        (["train", "churn", "--spec", str(tmp_path / "typo.json")], "invalid training spec: epochz"),
        (["train", "../etc", "--epochs", "2"], "invalid dataset name '../etc': use 1-64 characters [a-z0-9_-], start"),
        (["train", "churn", "--model-name", "../../etc"], "invalid model name '../../etc': use 1-64 characters"),
        (["train", "ghost"], "no dataset named 'ghost'"),
        (["train", "churn@ffffffff"], "has no version 'ffffffff'"),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, monkeypatch, *args)
        assert code == 2 and message in " ".join(err.split()), (args, out, err)
    code, _, err = run_cli(capsys, monkeypatch, "train", "churn", "--epochs", "0")
    assert code == 2 and "--epochs" in err
    assert requests.poll(1.0) == []   # nothing was published

    code, out, _ = run_cli(capsys, monkeypatch, "train", f"churn@{stored_dataset.version[:6]}", "--epochs", "3",
                           "--search", str(tmp_path / "space.json"), "--trials", "4")
    assert code == 0 and "search of 4 trials" in out
    (req,) = requests.wait(lambda ev: len(ev) == 1, what="the search request")
    assert req["dataset_version"] == stored_dataset.version and req["n_trials"] == 4
    assert json.loads(req["spec_json"]) == {"epochs": 3} and json.loads(req["search_space_json"])["lr"]["high"] == 0.1


@pytest.fixture
def metadata_sink(cli_settings, clickhouse_owner, monkeypatch):
    """The real metadata sink writing this test's lifecycle events into a private ClickHouse database."""
    from consumers.metadata_sink import build_runner
    from infra.clickhouse import HttpStore
    from infra.clickhouse.migrate import migrate

    s = cli_settings.with_overrides(clickhouse={"url": clickhouse_owner.url, "database": f"t_{uuid.uuid4().hex[:12]}"})
    monkeypatch.setenv("MODELBUS_CLICKHOUSE__URL", s.clickhouse.url)
    monkeypatch.setenv("MODELBUS_CLICKHOUSE__DATABASE", s.clickhouse.database)
    store = HttpStore(s.clickhouse.url, database=s.clickhouse.database)
    migrate(store, s.clickhouse)
    runner = build_runner(s, store, group_id="metadata-sink")
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    yield store
    runner.stop()
    thread.join(30)
    store.command(f"DROP DATABASE IF EXISTS {store.database}")
    store.close()


@pytest.mark.slow
def test_train_wait_follows_runs_and_runs_commands_explain_the_models(cli_settings, stored_dataset, metadata_sink,
                                                                     training_consumer, capsys, monkeypatch):
    with training_consumer(cli_settings):
        code, out, err = run_cli(capsys, monkeypatch, "train", "churn", "--epochs", "3", "--wait", "--timeout", "120")
        assert code == 0, err
        # Without a terminal rich renders 80 columns: table headers wrap inside their cells ("baseline" over
        # "majority") and long paths break anywhere, so assert on words, each where it cannot be split.
        words = out.split()
        assert "registered churn v1" in " ".join(words) and "finished" in words, out
        assert {"baseline", "majority", "linear", "boosting"} <= set(words), out
        code, out, err = run_cli(capsys, monkeypatch, "train", f"churn@{stored_dataset.version}", "--epochs", "2",
                                 "--lr", "0.01", "--seed", "1", "--wait", "--timeout", "120")
        assert code == 0 and "registered churn v2" in " ".join(out.split()), err

    deadline = time.monotonic() + 30
    while metadata_sink.query_rows("SELECT count() AS n FROM models FINAL")[0]["n"] < 2:
        assert time.monotonic() < deadline, "the metadata sink did not store both models"
        time.sleep(0.3)
    runs = {r["model_version"]: r["run_id"] for r in metadata_sink.query_rows(
        "SELECT model_version, run_id FROM models FINAL")}

    code, out, err = run_cli(capsys, monkeypatch, "runs", "list", "--dataset", "churn")
    assert code == 0, err
    assert runs[1] in out and runs[2] in out and "churn v1" in out and "churn v2" in out
    assert out.count("finished") >= 2
    code, out, _ = run_cli(capsys, monkeypatch, "runs", "list", "--dataset", "nothing-here")
    assert code == 0 and "no training runs yet" in out

    code, out, _ = run_cli(capsys, monkeypatch, "runs", "show", runs[1][:-4])   # a unique prefix is enough
    assert code == 0
    for needle in (runs[1], f"churn@{stored_dataset.version}", stored_dataset.checksum, "modelbus-",  # data, code
                   "torch", "epochs", "baseline majority", "roc_auc", "churn v1", "models/churn/1"):
        assert needle in out, needle
    code, _, err = run_cli(capsys, monkeypatch, "runs", "show", "churn-")
    assert code == 2 and "matches several runs" in err
    code, _, err = run_cli(capsys, monkeypatch, "runs", "show", "nope")
    assert code == 2 and "no training run matches 'nope'" in err

    code, out, _ = run_cli(capsys, monkeypatch, "runs", "compare", runs[1], runs[2])
    assert code == 0 and "Δ (b - a)" in out
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]   # not a terminal: whole TSV rows
    params = {r[0]: r[1:3] for r in rows if r[0] in ("epochs", "lr", "seed")}
    assert params == {"epochs": ["3", "2"], "lr": ["0.003", "0.01"], "seed": ["0", "1"]}   # lr auto: defaults.LR
