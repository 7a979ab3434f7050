"""Hostile strings at the SQL edge (issue #8), on both drivers (see conftest): values travel as bound
parameters or JSON rows and come back byte for byte; identifiers are quoted or refused. Nothing a name
or value holds ever runs as SQL, so after every attempt the database still has all its tables.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from infra.clickhouse import ClickHouseError
from infra.clickhouse.engine import check_database, quote_identifier
from infra.clickhouse.rows import write_events
from schemas.codec import AvroCodec
from schemas.events import new_header
from tests.fuzz_strategies import hostile_names

# The store fixture is function-scoped; sharing it across examples is fine because every property below
# filters on its own fresh ids and the table set only has to stay as it was.
SQL = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
VALUES = st.one_of(hostile_names(), st.text(max_size=60))


def _tables(store) -> set[str]:
    rows = store.query_rows("SELECT name FROM system.tables WHERE database = {db:String}", {"db": store.database})
    return {r["name"] for r in rows}


@SQL
@given(value=VALUES, more=st.lists(VALUES, max_size=4))
@example(value="x'; DROP TABLE datasets; --", more=["{v:String}", "\\'", "`"])
def test_bound_values_come_back_exactly(store, value, more):
    before = _tables(store)
    rows = store.query_rows("SELECT {v:String} AS v, length({v:String}) AS n, {vs:Array(String)} AS vs",
                            {"v": value, "vs": more})
    assert rows == [{"v": value, "n": len(value.encode()), "vs": more}]
    assert _tables(store) == before


@SQL
@given(name=hostile_names(), producer=VALUES, tag=VALUES, feature=VALUES)
def test_hostile_strings_in_events_are_stored_as_data(store, name, producer, tag, feature):
    """The metadata sink's path: decoded events → JSONEachRow rows → the same strings in the tables."""
    codec = AvroCodec()
    header = new_header(producer)
    value = {"header": header, "name": name, "version": "v1", "uri": f"file:///{name}", "metadata_uri": name,
             "task": "binary", "label_column": tag, "feature_columns": [feature, name], "schema": {feature: tag},
             "row_count": 1, "checksum": tag, "tags": {tag: name, name: feature}}
    drift = {"header": new_header(producer), "model_name": name, "model_version": 1, "feature": feature,
             "window_start": 1, "window_end": 2, "psi": 0.1, "test": tag, "statistic": 0.1, "p_value": 0.5,
             "psi_threshold": 0.2, "p_value_threshold": 0.01, "sample_size": 10}
    events = [(t, codec.decode(codec.encode(t, v)).value) for t, v in (("DatasetCreated", value),
                                                                        ("DriftDetected", drift))]
    before = _tables(store)
    write_events(store, events)
    got = store.query_rows("SELECT name, producer, label_column, feature_columns, tags FROM datasets "
                           "WHERE event_id = {id:String}", {"id": header["event_id"]})
    assert got == [{"name": name, "producer": producer, "label_column": tag, "feature_columns": [feature, name],
                    "tags": {tag: name, name: feature}}]
    got = store.query_rows("SELECT model_name, feature, test FROM drift_events WHERE event_id = {id:String}",
                           {"id": drift["header"]["event_id"]})
    assert got == [{"model_name": name, "feature": feature, "test": tag}]
    assert _tables(store) == before


@SQL
@given(name=hostile_names())
@example(name="datasets` ; DROP TABLE models; --")
def test_hostile_identifiers_are_quoted_never_executed(store, name):
    before = _tables(store)
    assume(name not in before)
    with pytest.raises(ClickHouseError):
        store.query_rows(f"SELECT count() AS n FROM {quote_identifier(name)}")
    with pytest.raises(ClickHouseError):
        store.insert_raw(name, b'{"x": 1}\n', "JSONEachRow", columns=[name])
    assert _tables(store) == before


@settings(max_examples=200, deadline=None)
@given(hostile_names())
@example("modelbus\n").via("regression: '$' matched before a trailing newline")
def test_database_names_are_identifiers_or_refused(name):
    """Database names are spliced into migrations (``$database``), so only plain identifiers pass."""
    try:
        assert check_database(name) == name
    except ClickHouseError as exc:
        assert "invalid database name" in str(exc)
        return
    assert name and name[0].isascii() and (name[0].isalpha() or name[0] == "_")
    assert all(c.isascii() and (c.isalnum() or c == "_") for c in name), name


@SQL
@given(name=st.text(min_size=1, max_size=20))
def test_parameters_cannot_be_spliced_under_any_name(store, name):
    """A parameter without a ``{name:Type}`` placeholder is refused, whatever it is called."""
    with pytest.raises(ClickHouseError, match="placeholder"):
        store.query_rows("SELECT 1 AS x", {name: "1 OR 1=1"})


def test_fresh_database_has_every_table(store):
    """Guards the properties above: they compare table sets, which must not be empty to mean anything."""
    assert {"datasets", "drift_events", "models", "inference_telemetry"} <= _tables(store)
