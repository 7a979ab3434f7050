"""Fuzzed dataset files through the SDK and the CLI (issue #8): a damaged, ragged or wrongly encoded file
is refused with the package's own error and a readable message, and a refused push leaves no trace in the
store or on the topic. A damaged file that still reads as a valid table may be pushed: then it is stored
and announced like any other, which the properties check too.
"""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from infra.app.cli.dataset import dataset_app
from infra.app.stack.triton import settings_env
from producers.errors import ProducerError
from tests.fuzz_strategies import hostile_names

from .conftest import churn_frame, module_client, topic_size

pytestmark = pytest.mark.stack

FILES = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPEC = {"name": "fuzz", "label": "churned"}


@pytest.fixture(scope="module")
def client(kafka_settings, tmp_path_factory):
    """One SDK client on fresh topics and a fresh store; ``pushed`` counts the pushes that succeeded."""
    mb = module_client(kafka_settings, tmp_path_factory, "fz")
    mb.published = set()
    yield mb
    mb.close()
    assert topic_size(mb.settings) == len(mb.published), "every announcement belongs to a successful push"


def _readable(msg: str) -> bool:
    return bool(msg.strip()) and len(msg) < 4000 and "\x00" not in msg and "Traceback" not in msg


def push_file(client, data: bytes, suffix: str, **spec):
    """Push ``data`` as a file; assert the refusal-or-success contract; return the exception or result."""
    before = set(client.store.list(""))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(data)
        try:
            res = client.push_dataset(path, **{**SPEC, **spec})
        except ProducerError as exc:
            assert _readable(str(exc)), repr(str(exc))
            assert set(client.store.list("")) == before, "a refused push stored something"
            event(f"refused: {type(exc).__name__}")
            return exc
    event("pushed")
    assert res.row_count > 0 and client.datasets.read_table(res.ref).num_rows == res.row_count
    if res.published:
        client.published.add(res.event_id)
    return res


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    churn_frame(n=60).to_parquet(buf, index=False)
    return buf.getvalue()


PARQUET = _parquet_bytes()


@FILES
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".csv", ".parquet", ".tsv", ".csv.gz", ".pq", ".txt"]))
def test_random_bytes_are_refused(client, data, suffix):
    assert isinstance(push_file(client, data, suffix), ProducerError)


@FILES
@given(truncate=st.booleans(), cut=st.integers(0, len(PARQUET) - 1),
       bits=st.lists(st.integers(0, len(PARQUET) * 8 - 1), min_size=1, max_size=16))
@example(truncate=False, cut=0, bits=[8 * PARQUET.index(b'{"index_columns"') + 7]).via(
    "regression: a damaged pandas metadata footer raised UnicodeDecodeError")
def test_truncated_or_bit_flipped_parquet_is_refused_or_pushed_whole(client, truncate, cut, bits):
    damaged = bytearray(PARQUET)
    if truncate:
        damaged = damaged[:cut]
    else:
        for bit in bits:
            damaged[bit // 8] ^= 1 << (bit % 8)
    push_file(client, bytes(damaged), ".parquet")


HEADER = ["age", "income", "region", "plan", "churned"]
CELLS = st.one_of(st.integers(-1000, 1000).map(str), st.floats().map(str), st.text(max_size=8),
                  st.sampled_from(["yes", "no", "eu", "", " ", '"', '""', "a,b", '"open', "\\N", "NaN", "inf", "\t"]))


@st.composite
def ragged_csv(draw) -> bytes:
    """CSV text with rows of random width, odd quoting and line ends, in a random encoding, maybe with NULs."""
    header = draw(st.one_of(st.just(HEADER), st.lists(st.one_of(st.sampled_from(HEADER), hostile_names(12)),
                                                      min_size=1, max_size=6)))
    rows = draw(st.lists(st.lists(CELLS, max_size=7), max_size=25))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(",".join(r) for r in [header, *rows]) + draw(st.sampled_from(["", end]))
    enc = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252"]))
    raw = bytearray(text.encode(enc, errors="replace"))
    for pos in draw(st.lists(st.integers(0, len(raw)), max_size=3)):
        raw.insert(min(pos, len(raw)), 0)
    return bytes(raw)


@FILES
@given(data=ragged_csv(), gz=st.booleans())
def test_ragged_and_wrongly_encoded_csv_is_refused_or_pushed_whole(client, data, gz):
    if gz:
        data = gzip.compress(data)
    push_file(client, data, ".csv.gz" if gz else ".csv")


@FILES
@given(data=st.binary(min_size=1, max_size=512))
def test_cut_gzip_streams_are_refused(client, data):
    good = gzip.compress(b"age,churned\n" + data)
    assert isinstance(push_file(client, good[:len(good) // 2], ".csv.gz"), ProducerError)


@pytest.fixture(scope="module")
def cli_env(client):
    return {**settings_env(client.settings), "COLUMNS": "200"}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=512), ragged_csv()), suffix=st.sampled_from([".csv", ".parquet"]))
def test_cli_refuses_with_one_error_line_and_exit_2(client, cli_env, data, suffix):
    before = set(client.store.list(""))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(data)
        r = CliRunner().invoke(dataset_app, ["push", str(path), "--name", "fuzzcli", "--label", "churned"],
                               env=cli_env, catch_exceptions=False)
    if r.exit_code == 0:   # a random file that happens to be a valid dataset: pushed and announced
        assert "pushed fuzzcli@" in r.output or "unchanged fuzzcli@" in r.output
        if "DatasetCreated event" in r.output:
            client.published.add(r.output.split("DatasetCreated event ")[1].split()[0])
        return
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and "Traceback" not in r.output and "unexpected error" not in r.output
    assert set(client.store.list("")) == before
