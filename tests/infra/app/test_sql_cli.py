"""``modelbus sql`` against the embedded ClickHouse owner (a real subprocess speaking ClickHouse HTTP)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid

import pytest
from typer.testing import CliRunner

from infra.app.cli.main import app
from infra.app.stack.process import free_port
from infra.clickhouse import ClickHouseError, HttpStore

pytestmark = pytest.mark.stack

HOSTILE = "x'); DROP TABLE t; --\\"


@pytest.fixture
def env(clickhouse_owner):
    """The environment an operator would set, pointing at a private database on the owner."""
    db = f"t_{uuid.uuid4().hex[:12]}"
    store = HttpStore(clickhouse_owner.url, database=db)
    store.command("CREATE TABLE t (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    store.command("INSERT INTO t VALUES (1, 'a'), (2, '[bold]b[/bold]')")
    values = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    values.update({"MODELBUS_CLICKHOUSE__URL": clickhouse_owner.url, "MODELBUS_CLICKHOUSE__DATABASE": db})
    yield values
    store.command(f"DROP DATABASE IF EXISTS {db} SYNC")
    store.close()


def sql(env, *args):
    return CliRunner().invoke(app, ["sql", *args], env=env)


def test_results_with_bound_parameters(env):
    res = sql(env, "SELECT {n:UInt32} + 1 AS n, {s:String} AS s, {a:Array(String)} AS a, {d:Nullable(Date)} AS d",
              "--param", "n=41", "--param", f"s={HOSTILE}", "--param", "a=['p','q''s']", "-p", "d=\\N",
              "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"n": 42, "s": HOSTILE, "a": ["p", "q's"], "d": None}]

    res = sql(env, "SELECT id, name FROM t WHERE id >= {min:UInt8} ORDER BY id", "-p", "min=1", "-f", "csv")
    assert list(csv.reader(io.StringIO(res.stdout))) == [["id", "name"], ["1", "a"], ["2", "[bold]b[/bold]"]]

    res = sql(env, "SELECT id, name FROM t ORDER BY id")                   # rich table, values not read as markup
    assert res.exit_code == 0 and "2 rows" in res.stdout and "[bold]b[/bold]" in res.stdout


def test_clickhouse_errors_are_shown_verbatim(env, clickhouse_owner):
    direct = HttpStore(clickhouse_owner.url, database=env["MODELBUS_CLICKHOUSE__DATABASE"])
    with pytest.raises(ClickHouseError) as exc:
        direct.query_arrow("SELECT * FROM nope")
    res = sql(env, "SELECT * FROM nope")
    assert res.exit_code != 0
    assert "Code: 60" in res.stderr and "UNKNOWN_TABLE" in res.stderr
    assert " ".join(res.stderr.split()) == " ".join(str(exc.value).split())

    res = sql(env, "SELECT {x:String} AS x")                                     # nothing bound: ClickHouse says so
    assert res.exit_code != 0 and "UNKNOWN_QUERY_PARAMETER" in res.stderr

    res = sql(env, "SELECT 1 AS one", "-p", "unused=1")                          # never silently dropped
    assert res.exit_code != 0 and "unused" in res.stderr and "placeholder" in res.stderr


def test_hostile_values_stay_data(env):
    res = sql(env, "SELECT count() AS n FROM t WHERE name = {name:String}", "-p", "name=a' OR '1'='1", "-f", "json")
    assert json.loads(res.stdout) == [{"n": 0}]
    res = sql(env, "SELECT * FROM t WHERE id = {id:UInt32}", "-p", "id=1; DROP TABLE t")
    assert res.exit_code != 0 and "UInt32" in res.stderr                       # refused as a value, not run
    res = sql(env, "SELECT count() AS n FROM t", "-f", "json")
    assert json.loads(res.stdout) == [{"n": 2}]


def test_statements_without_rows_run_as_commands(env):
    res = sql(env, "INSERT INTO t SELECT number + 10, {name:String} FROM numbers(3)", "-p", "name=z")
    assert res.exit_code == 0 and "OK" in res.stderr
    res = CliRunner().invoke(app, ["sql", "-", "-f", "json"], env=env,
                             input="-- comment first\nSELECT count() AS n FROM t WHERE name = 'z'")
    assert json.loads(res.stdout) == [{"n": 3}]


def test_bad_usage_and_unreachable_clickhouse(env):
    res = sql(env, "SELECT 1", "-p", "no-equals-sign")
    assert res.exit_code == 2 and "NAME=VALUE" in res.output
    down = dict(env, MODELBUS_CLICKHOUSE__URL=f"http://127.0.0.1:{free_port()}")
    res = sql(down, "SELECT 1")
    assert res.exit_code != 0 and "does not answer" in res.stderr


def test_merged_into_the_modelbus_command(env):
    out = subprocess.run([sys.executable, "-m", "infra.app.cli.main", "sql", "SELECT {v:String} AS v", "-p", "v=ok",
                          "-f", "csv"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["v", "ok"]
