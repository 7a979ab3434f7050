"""Client-side column encoding, signature discovery and error mapping (no Triton needed)."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from serving.client import encode_column, map_error, signature_from_config
from serving.errors import InvalidRequest, ModelNotFound, ServerUnavailable, ServingError
from serving.reference_model import signature as reference_signature
from serving.repository import ModelRepository
from serving.signature import Signature, TensorSpec


def test_numbers_become_fp32_rows_and_none_becomes_nan():
    spec = TensorSpec("age", "FP32", (1,), "age", "numeric")
    arr = encode_column(spec, [1, None, "3.5"])
    assert arr.dtype == np.float32 and arr.shape == (3, 1)
    assert arr[0, 0] == 1.0 and np.isnan(arr[1, 0]) and arr[2, 0] == 3.5
    with pytest.raises(InvalidRequest, match="column 'age' must hold numbers"):
        encode_column(spec, ["old"])


def test_strings_become_bytes_and_none_is_the_missing_token():
    spec = TensorSpec("region", "BYTES", (1,), "region", "categorical")
    arr = encode_column(spec, ["EU", None, 7, "Zürich"])
    assert arr.dtype == object and arr.shape == (4, 1)
    assert list(arr[:, 0]) == [b"EU", b"", b"7", "Zürich".encode()]


def test_image_rows_are_reshaped_and_bad_sizes_refused():
    spec = TensorSpec("image", "FP32", (2, 2), "image", "image")
    assert encode_column(spec, [[1, 2, 3, 4], [5, 6, 7, 8]]).shape == (2, 2, 2)
    assert encode_column(spec, np.zeros((3, 2, 2))).shape == (3, 2, 2)
    with pytest.raises(InvalidRequest, match="not a multiple of the shape"):
        encode_column(spec, [1, 2, 3])


def test_signature_is_read_from_the_published_config(tmp_path):
    sig = Signature.parse(reference_signature("churn", 1))
    text = ModelRepository.open(str(tmp_path)).render_config("churn", sig, [1])
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2 as mc

    as_json = json_format.MessageToDict(text_format.Parse(text, mc.ModelConfig()), preserving_proto_field_name=True)
    assert signature_from_config(as_json) == sig


def test_plain_triton_models_get_a_derived_signature():
    config = {"input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["3"]},
                        {"name": "s", "data_type": "TYPE_STRING", "dims": ["1"]}],
              "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["1"]}]}
    sig = signature_from_config(config)
    assert [(s.name, s.dtype, s.dims, s.kind) for s in sig.inputs] == [
        ("x", "FP32", (3,), "numeric"), ("s", "BYTES", (1,), "categorical")]
    assert [s.name for s in sig.outputs] == ["y"]


@pytest.mark.parametrize("status, cls", [("StatusCode.NOT_FOUND", ModelNotFound),
                                         ("StatusCode.INVALID_ARGUMENT", InvalidRequest),
                                         ("StatusCode.UNAVAILABLE", ServerUnavailable),
                                         ("StatusCode.INTERNAL", ServingError)])
def test_status_codes_map_to_serving_errors_with_tritons_message(status, cls):
    err = map_error(InferenceServerException("the server said so", status=status), url="127.0.0.1:1")
    assert type(err) is cls and "the server said so" in str(err)
