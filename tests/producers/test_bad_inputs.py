"""Bad input is refused with a clear message, and nothing is stored or published (real broker, real store)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from producers.errors import DatasetInputError, DatasetValidationError, InvalidNameError, InvalidSpecError

from .conftest import SPEC, churn_frame, module_client, topic_size

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def client(kafka_settings, tmp_path_factory):
    """One SDK client for the module: every push below must fail, so its topic and store stay empty."""
    mb = module_client(kafka_settings, tmp_path_factory, "bad")
    yield mb
    mb.close()


@pytest.fixture
def refused(client):
    """Call as refused(exc_type, match, data, **spec); asserts the refusal left no trace."""
    def check(exc_type, match, data, **spec):
        with pytest.raises(exc_type, match=match) as info:
            client.push_dataset(data, **{**SPEC, **spec})
        assert list(client.store.list("")) == [], "a refused push stored something"
        assert topic_size(client.settings) == 0, "a refused push published something"
        return info.value

    return check


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_truncated_parquet(refused, tmp_path, frame):
    good = tmp_path / "good.parquet"
    frame.to_parquet(good)
    data = good.read_bytes()
    refused(DatasetInputError, "not a readable Parquet", _write(tmp_path, "cut.parquet", data[: len(data) // 2]))
    refused(DatasetInputError, "empty", _write(tmp_path, "empty.parquet", b""))


def test_binary_garbage_named_csv(refused, tmp_path):
    refused(DatasetInputError, "NUL bytes", _write(tmp_path, "garbage.csv", os.urandom(4096) + b"\x00"))
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(256)
    refused(DatasetInputError, "NUL bytes", _write(tmp_path, "image.csv", png))


def test_utf16_csv(refused, tmp_path, frame):
    text = frame.to_csv(index=False)
    refused(DatasetInputError, "UTF-16", _write(tmp_path, "u16.csv", text.encode("utf-16")))
    refused(DatasetInputError, "UTF-16", _write(tmp_path, "u16be.csv", b"\xfe\xff" + text.encode("utf-16-be")))


def test_latin1_csv(refused, tmp_path, frame):
    text = frame.assign(plan=frame["plan"].replace("pro", "caf\u00e9")).to_csv(index=False)
    err = refused(DatasetInputError, "not valid UTF-8", _write(tmp_path, "latin1.csv", text.encode("latin-1")))
    assert "latin-1" in str(err) and "iconv" in str(err)
    header = "\u00e2ge,churned\n1,yes\n2,no\n".encode("latin-1")
    refused(DatasetInputError, "not valid UTF-8", _write(tmp_path, "latin1h.csv", header))


def test_latin1_bytes_after_the_first_block(refused, tmp_path, monkeypatch):
    """Bytes past the sniffed head and the first parsed block are still caught, with the encoding named."""
    from producers.datasets import sources

    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 4096)
    monkeypatch.setattr(sources, "SNIFF_BYTES", 1024)
    rows = "".join(f"{i},{'yes' if i % 2 else 'no'},city{i}\n" for i in range(3000))
    data = b"n,churned,city\n" + rows.encode() + "3000,yes,S\u00e3o Paulo\n".encode("latin-1")
    refused(DatasetInputError, "not valid UTF-8", _write(tmp_path, "late.csv", data), slice_by=["city"])


def test_empty_and_header_only_files(refused, tmp_path):
    refused(DatasetInputError, "empty", _write(tmp_path, "empty.csv", b""))
    err = refused(DatasetValidationError, "no rows", _write(tmp_path, "header.csv", b"age,churned,region\n"))
    assert [i.rule for i in err.report.failures] == ["not_empty"]


def test_ragged_or_cut_csv(refused, tmp_path, frame):
    text = frame.to_csv(index=False)
    refused(DatasetInputError, "not a readable CSV", _write(tmp_path, "cut.csv", text.encode()[:-9]))
    refused(DatasetInputError, "not a readable CSV", _write(tmp_path, "ragged.csv", b"a,churned\n1,yes\n2\n"))


def test_missing_file_and_unsupported_objects(refused, tmp_path, frame):
    refused(DatasetInputError, "no such file", tmp_path / "nope.csv")
    refused(DatasetInputError, "not a regular file", tmp_path)
    refused(DatasetInputError, "cannot push a dict", {"a": [1]})
    refused(DatasetInputError, "no labels", np.zeros((3, 2)))
    refused(DatasetInputError, "3 rows but labels have 2", (np.zeros((3, 2)), np.array([0, 1])))


def test_missing_label_column(refused, frame):
    err = refused(DatasetValidationError, "label column 'churned' not found", frame.drop(columns=["churned"]))
    assert err.report.failures[0].rule == "column_present"
    refused(DatasetValidationError, "slice column 'country' not found", frame, slice_by=["country"])


def test_label_with_one_class(refused, frame):
    err = refused(DatasetValidationError, "single class", frame.assign(churned="no"))
    assert err.report.failures[0].column == "churned"
    refused(DatasetValidationError, "constant", frame.assign(churned=1.5), task="regression")
    refused(DatasetValidationError, "exactly 2 classes", frame, label="region", task="binary",
            slice_by=[])


def test_non_numeric_values_where_numbers_are_required(refused, frame):
    words = frame.astype({"age": object})
    words.loc[[3, 150], "age"] = ["unknown", "n/a?"]
    err = refused(DatasetValidationError, "non-numeric", words)  # 99 % numbers: clearly a numeric column
    [issue] = err.report.failures
    assert (issue.column, issue.rule, issue.rows) == ("age", "numeric", 2)
    assert set(issue.examples) == {"'unknown'", "'n/a?'"} and set(issue.example_rows) == {3, 150}
    err = refused(DatasetValidationError, "must be numeric", frame, numeric=["plan"])
    assert err.report.failures[0].rows == 200
    refused(DatasetValidationError, "numeric", frame, label="plan", task="regression")


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "/abs", "Churn", "x" * 65, "", "a b", "a\x00b",
                                  "caf\u00e9", "-lead"])
def test_hostile_dataset_names(refused, frame, name):
    refused(InvalidNameError, "invalid dataset name", frame, name=name)


@pytest.mark.parametrize("column", ["../x", "a/b", "x" * 200, "tab\there", "new\nline", "__index_level_0__",
                                    'quo"te', "back\\slash", " padded", ""])
def test_hostile_column_names(refused, frame, column):
    data = frame.assign(**{column: 1.0})
    err = refused(DatasetValidationError, "invalid column name", data)
    assert [i.rule for i in err.report.failures] == ["column_name"]


def test_hostile_names_in_the_spec(refused, frame):
    refused(InvalidNameError, "invalid column name", frame, label="../etc/passwd")
    refused(InvalidNameError, "invalid column name", frame, slice_by=["a/b"])
    refused(InvalidSpecError, "cannot also be a feature", frame, features=["churned"])


def test_duplicate_columns_and_unsupported_types(refused, tmp_path, frame):
    refused(DatasetValidationError, "appears 2 times", _write(tmp_path, "dup.csv", b"a,a,churned\n1,2,yes\n3,4,no\n"))
    nested = pa.Table.from_pandas(frame).append_column("tags", pa.array([[1, 2]] * 200))
    err = refused(DatasetValidationError, "has type list", nested)
    assert err.report.failures[0].rule == "supported_type"
    refused(InvalidNameError, "duplicate column name", pd.concat([frame, frame[["age"]]], axis=1))


def test_every_failure_is_reported_at_once(refused):
    bad = churn_frame().astype({"age": float})
    bad.loc[5, "churned"] = None
    bad.loc[7, "income"] = np.inf
    bad.loc[9, "age"] = 200
    err = refused(DatasetValidationError, "3 check", bad, expectations=[{"column": "age", "min": 0, "max": 120}])
    found = {(i.column, i.rule): i for i in err.report.failures}
    assert set(found) == {("churned", "not_null"), ("income", "finite"), ("age", "in_range(0.0, 120.0)")}
    assert found[("age", "in_range(0.0, 120.0)")].example_rows == (9,)
    assert found[("churned", "not_null")].example_rows == (5,)
    assert found[("income", "finite")].examples == ("inf",)
