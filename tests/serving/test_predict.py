"""Round trips and refusals against the real Triton: the server answers clearly and keeps serving."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.errors import InvalidRequest, ModelNotFound
from serving.reference_model import SAMPLE, build_module, run_module

pytestmark = pytest.mark.stack


def _raw_inputs(age=None, income=None, region=None):
    age = np.array([[30.0], [50.0]], dtype=np.float32) if age is None else age
    income = np.array([[40000.0], [60000.0]], dtype=np.float32) if income is None else income
    region = np.array([[b"EU"], [b"US"]], dtype=object) if region is None else region
    out = []
    for name, arr in (("age", age), ("income", income), ("region", region)):
        if arr is False:
            continue
        dtype = "BYTES" if arr.dtype == object else {"float32": "FP32", "int64": "INT64"}[str(arr.dtype)]
        inp = grpcclient.InferInput(name, list(arr.shape), dtype)
        inp.set_data_from_numpy(arr)
        out.append(inp)
    return out


def _grpc_error(triton, inputs, model="churn", version=""):
    raw = grpcclient.InferenceServerClient(triton.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        raw.infer(model, inputs, model_version=version)
    raw.close()
    return info.value


def test_round_trip_matches_in_process_torch(deployed_churn, model_client):
    out = model_client.predict("churn", SAMPLE)
    scores, label = run_module(build_module(seed=0), SAMPLE)
    np.testing.assert_allclose(out["scores__0"], scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["label__1"], label)
    assert out["scores__0"].shape == (4, 2) and out["label__1"].dtype == np.int64
    # Triton input names work as keys too, and a single row is a batch of one.
    one = model_client.predict("churn", {"age": [25.0], "income": [32000.0], "region": ["EU"]}, version=1)
    np.testing.assert_allclose(one["scores__0"][0], scores[0], rtol=1e-5)


def test_unknown_category_maps_to_oov_not_error(deployed_churn, model_client):
    out = model_client.predict("churn", {"age": [40.0], "income": [50000.0], "region": ["Mars"]})
    expected, _ = run_module(build_module(seed=0), {"age": [40.0], "income": [50000.0], "region": ["Mars"]})
    np.testing.assert_allclose(out["scores__0"], expected, rtol=1e-5)


@pytest.mark.parametrize("case, inputs_kw, needle", [
    ("shape", {"age": np.ones((2, 2), dtype=np.float32)}, "unexpected shape for input 'age'"),
    ("dtype", {"age": np.ones((2, 1), dtype=np.int64)}, "data-type is 'INT64'"),
    ("missing", {"age": False}, "missing required input(s) ['age']"),
    ("nan", {"age": np.array([[np.nan], [3.0]], dtype=np.float32)}, "input 'age' contains NaN or infinite values"),
    ("inf", {"income": np.array([[1.0], [np.inf]], dtype=np.float32)}, "input 'income' contains NaN or infinite"),
    ("batch", {"age": np.ones((65, 1), np.float32), "income": np.ones((65, 1), np.float32),
               "region": np.array([[b"EU"]] * 65, dtype=object)}, "batch-size must be <= 64"),
])
def test_bad_requests_are_invalid_argument_and_server_keeps_serving(deployed_churn, triton, model_client,
                                                                     case, inputs_kw, needle):
    err = _grpc_error(triton, _raw_inputs(**inputs_kw))
    assert err.status() == "StatusCode.INVALID_ARGUMENT", (case, err)
    assert needle.lower() in err.message().lower(), err.message()
    ok = model_client.predict("churn", SAMPLE)
    assert ok["scores__0"].shape == (4, 2)


def test_client_maps_invalid_argument_and_column_problems(deployed_churn, model_client):
    with pytest.raises(InvalidRequest, match="NaN"):
        model_client.predict("churn", {"age": [None], "income": [1.0], "region": ["EU"]})
    with pytest.raises(InvalidRequest, match="missing input column.*income"):
        model_client.predict("churn", {"age": [1.0], "region": ["EU"]})
    with pytest.raises(InvalidRequest, match="unknown input 'agee'"):
        model_client.predict("churn", {"agee": [1.0], "age": [1.0], "income": [1.0], "region": ["EU"]})
    with pytest.raises(InvalidRequest, match="must hold numbers"):
        model_client.predict("churn", {"age": ["old"], "income": [1.0], "region": ["EU"]})


def test_unknown_model_and_version_are_not_found(deployed_churn, triton, model_client):
    assert _grpc_error(triton, _raw_inputs(), model="nope").status() == "StatusCode.NOT_FOUND"
    assert _grpc_error(triton, _raw_inputs(), version="99").status() == "StatusCode.NOT_FOUND"
    with pytest.raises(ModelNotFound, match="nope"):
        model_client.predict("nope", SAMPLE)
    with pytest.raises(ModelNotFound, match="version 99"):
        model_client.predict("churn", SAMPLE, version=99)


def test_concurrent_load_path_uses_keyword_callbacks(deployed_churn, model_client):
    res = model_client.run_load("churn", {"age": [30.0], "income": [4e4], "region": ["EU"]},
                                concurrency=8, requests=200)
    assert res.errors == [] and len(res.latencies_s) == 200
    assert res.throughput > 0 and res.percentile(50) > 0


def test_load_over_a_sequence_of_requests_sends_each_in_turn(deployed_churn, model_client):
    good = {"age": [30.0], "income": [4e4], "region": ["EU"]}
    nan_row = {"age": [None], "income": [4e4], "region": ["EU"]}   # Triton refuses NaN: the cycle becomes visible
    res = model_client.run_load("churn", [good, good, nan_row], concurrency=4, requests=60)
    assert len(res.latencies_s) == 40 and len(res.errors) == 20
    assert all("NaN" in e for e in res.errors)
    with pytest.raises(ValueError, match="empty"):
        model_client.run_load("churn", [], concurrency=1, requests=1)


def _counter(triton, name: str, model: str) -> float:
    from serving.metrics_scraper import scrape_once

    return sum(s["value"] for s in scrape_once(triton.metrics_url)["samples"]
               if s["name"] == name and s["labels"].get("model") == model)


def test_bad_request_inside_a_dynamic_batch_fails_alone(deployed_churn, triton):
    """Concurrent requests are merged into one execute(); a NaN request must not fail its batch-mates."""
    import threading

    raw = grpcclient.InferenceServerClient(triton.grpc_url)
    good, bad = _raw_inputs(), _raw_inputs(age=np.array([[np.nan], [1.0]], dtype=np.float32))
    expected, _ = run_module(build_module(seed=0), {"age": [30.0, 50.0], "income": [4e4, 6e4], "region": ["EU", "US"]})
    outcomes: list[tuple[bool, object]] = []
    done = threading.Semaphore(0)
    executions_before = _counter(triton, "nv_inference_exec_count", "churn")

    def callback(is_bad, result=None, error=None):
        outcomes.append((is_bad, error if error is not None else result.as_numpy("scores__0")))
        done.release()

    n = 64
    for i in range(n):
        raw.async_infer("churn", bad if i % 4 == 0 else good, lambda result=None, error=None, b=(i % 4 == 0):
                        callback(b, result=result, error=error))
    for _ in range(n):
        assert done.acquire(timeout=30)
    raw.close()
    for is_bad, out in outcomes:
        if is_bad:
            assert isinstance(out, InferenceServerException) and out.status() == "StatusCode.INVALID_ARGUMENT"
        else:
            np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert sum(b for b, _ in outcomes) == n // 4
    executions = _counter(triton, "nv_inference_exec_count", "churn") - executions_before
    assert 1 <= executions < n, f"dynamic batching should have merged concurrent requests ({executions} runs)"
