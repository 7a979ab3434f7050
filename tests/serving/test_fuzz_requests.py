"""Fuzzed inference requests against the real Triton (issue #8): a request with a wrong shape or dtype,
NaN/inf values, no rows, too many rows, rows that disagree, a missing or an unknown input is refused with
INVALID_ARGUMENT and a message naming the problem, a valid one (however odd its strings) is answered with
exactly the reference model's result, and after every request the server still serves.

Requests are built with tritonclient directly (the wire, not our client) so nothing is corrected on the
way; a second property drives ``ModelClient.predict`` with hostile column values.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from serving.errors import InvalidRequest, ServingError
from serving.reference_model import SAMPLE, build_module, run_module

pytestmark = pytest.mark.stack

REQUESTS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MAX_BATCH = 64   # RepositoryOptions.max_batch_size, the config deployed_churn was deployed with
NUMERIC, CATEGORICAL = ("age", "income"), "region"
WRONG_DTYPES = {"FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32, "INT8": np.int8,
                "UINT8": np.uint8, "BOOL": np.bool_}
FAULTS = ("missing", "dtype", "shape", "rows", "nonfinite")
MODULE = build_module(seed=0)


FAULT_SITES = ([(name, f) for name in NUMERIC for f in FAULTS]
               + [(CATEGORICAL, f) for f in ("missing", "dtype", "shape", "rows")]
               + [("request", "extra input"), ("request", "batch")])


@st.composite
def raw_requests(draw):
    """(InferInputs, reference columns or None when the request is invalid, the faults put in).

    Most requests carry zero, one or two faults, so each refusal has a known cause and valid requests
    (with odd bytes, unknown categories or a megabyte-long string) are common too.
    """
    wanted = set(draw(st.lists(st.sampled_from(FAULT_SITES), max_size=2, unique=True), label="faults"))
    n = draw(st.sampled_from([0, MAX_BATCH + 1]) | st.integers(MAX_BATCH + 1, 5000) if ("request", "batch") in wanted
             else st.integers(1, MAX_BATCH), label="rows")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    inputs, columns = [], {}
    for name in (*NUMERIC, CATEGORICAL):
        fault = next((f for site, f in wanted if site == name), None)
        if fault == "missing":
            continue
        rows = max(n + draw(st.sampled_from([-1, 1])), 0) if fault == "rows" else n
        if name == CATEGORICAL:
            pool = draw(st.lists(st.one_of(st.sampled_from([b"EU", b"US", b"APAC", b""]), st.binary(max_size=30)),
                                 min_size=1, max_size=8))
            values = np.array([[pool[i % len(pool)]] for i in range(rows)], dtype=object)
            if rows and draw(st.booleans(), label="a 1-2 MiB string"):   # big, but a valid (unknown) category
                values[0, 0] = b"x" * draw(st.integers(2**20, 2**21))
            columns[name] = [v[0].decode("utf-8", "replace") for v in values]
            arr, dtype = (values, "BYTES") if fault != "dtype" else (rng.normal(size=(rows, 1)).astype(np.float32),
                                                                     "FP32")
        else:
            arr, dtype = (rng.normal(40, 30, size=(rows, 1)) * 10 ** rng.integers(0, 5)).astype(np.float32), "FP32"
            if fault == "nonfinite" and rows:
                where = draw(st.lists(st.integers(0, max(rows - 1, 0)), min_size=1, max_size=3))
                arr[where, 0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            if fault == "dtype":
                dtype = draw(st.sampled_from(sorted(WRONG_DTYPES)))
                with np.errstate(over="ignore", invalid="ignore"):
                    arr = arr.astype(WRONG_DTYPES[dtype])
            columns[name] = arr.reshape(-1).tolist()
        if fault == "shape":
            arr = draw(st.sampled_from([arr.reshape(-1), np.concatenate([arr, arr], axis=1), arr.reshape(rows, 1, 1)]))
        inp = grpcclient.InferInput(name, list(arr.shape), dtype)
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    if ("request", "extra input") in wanted:
        extra = grpcclient.InferInput("agee", [max(n, 1), 1], "FP32")
        extra.set_data_from_numpy(np.ones((max(n, 1), 1), np.float32))
        inputs.append(extra)
    faults = sorted(f"{site}:{f}" for site, f in wanted)
    return inputs, (None if faults else columns), faults


@pytest.fixture
def raw(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    client.close()


def assert_still_serving(model_client):
    out = model_client.predict("churn", SAMPLE)
    np.testing.assert_allclose(out["scores__0"], run_module(MODULE, SAMPLE)[0], rtol=1e-5, atol=1e-6)


@REQUESTS
@given(request=raw_requests())
def test_bad_requests_are_invalid_argument_and_the_server_keeps_serving(deployed_churn, triton, raw, model_client,
                                                                       request):
    inputs, columns, faults = request
    try:
        result = raw.infer("churn", inputs, client_timeout=30)
    except InferenceServerException as exc:
        assert columns is None, f"valid request refused: {exc}"
        assert exc.status() == "StatusCode.INVALID_ARGUMENT", (faults, exc.status(), exc.message())
        assert exc.message() and len(exc.message()) < 2000, faults
        event(f"refused: {' + '.join(f.split(':')[-1] for f in faults)}")
    else:
        assert columns is not None, f"{faults} were accepted"
        scores, label = run_module(MODULE, columns)
        np.testing.assert_allclose(result.as_numpy("scores__0"), scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(result.as_numpy("label__1"), label)
        event("answered")
    assert_still_serving(model_client)


COLUMN_VALUES = st.one_of(
    st.lists(st.floats(), max_size=5),
    st.lists(st.one_of(st.none(), st.integers(-2**1100, 2**1100), st.text(max_size=5), st.binary(max_size=5)),
             max_size=5),
    st.lists(st.lists(st.floats(allow_nan=False), max_size=3), max_size=3),
    st.text(max_size=5), st.floats(), st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.integers(-2**70, 2**70),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(columns=st.dictionaries(st.sampled_from(["age", "income", "region", "agee", "", "../x"]), COLUMN_VALUES,
                               max_size=4))
@example(columns={"age": [2**1100], "income": [1.0], "region": ["EU"]}).via(
    "regression: an int beyond float range raised OverflowError in the client")
def test_client_turns_any_column_values_into_a_result_or_a_serving_error(deployed_churn, model_client, columns):
    try:
        out = model_client.predict("churn", columns)
    except ServingError as exc:   # InvalidRequest from the client's checks or from Triton's INVALID_ARGUMENT
        assert str(exc), columns
        event(f"refused: {type(exc).__name__}")
    else:
        assert set(columns) >= {"age", "income", "region"} and out["scores__0"].shape[1] == 2
        event("answered")
    assert_still_serving(model_client)


@st.composite
def column_requests(draw):
    """Columns as callers write them: lists of numbers (maybe None/NaN/inf) and strings, maybe of unequal length."""
    n = draw(st.integers(0, MAX_BATCH + 3))
    finite = st.floats(-1e6, 1e6, width=32)
    num = finite if draw(st.booleans()) else st.one_of(finite, st.none(), st.sampled_from([np.nan, np.inf, -np.inf]))
    k = draw(st.integers(0, MAX_BATCH + 3)) if draw(st.integers(0, 3)) == 0 else n   # sometimes a ragged column
    return {"age": draw(st.lists(num, min_size=k, max_size=k)),
            "income": draw(st.lists(num, min_size=n, max_size=n)),
            "region": draw(st.lists(st.one_of(st.text(max_size=10), st.none()), min_size=n, max_size=n))}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(columns=column_requests())
def test_client_answers_exactly_the_valid_column_requests(deployed_churn, model_client, columns):
    lengths = {len(v) for v in columns.values()}
    finite = all(v is not None and np.isfinite(v) for c in NUMERIC for v in columns[c])
    valid = len(lengths) == 1 and 1 <= lengths.pop() <= MAX_BATCH and finite
    try:
        out = model_client.predict("churn", columns)
    except InvalidRequest as exc:
        assert not valid, f"valid columns refused: {exc}"
        event("refused")
    else:
        assert valid, f"invalid columns answered: {columns}"
        reference = {**columns, "region": ["" if r is None else r for r in columns["region"]]}
        np.testing.assert_allclose(out["scores__0"], run_module(MODULE, reference)[0], rtol=1e-4, atol=1e-5)
        event("answered")
    assert_still_serving(model_client)


def test_server_is_healthy_after_the_fuzzing(deployed_churn, triton, model_client):
    """Runs after the properties above (file order): the process never restarted and the model is ready."""
    assert triton.is_running() and triton.healthy()
    assert model_client.is_ready("churn")
    assert_still_serving(model_client)
