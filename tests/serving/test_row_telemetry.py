"""Every served row is counted: a batch through real Triton, Kafka, the telemetry sink and ClickHouse.

Also the row identity the client gets back (prediction ids, its own row keys) and the refusal of keys that
do not fit the request.
"""

from __future__ import annotations

import time
import uuid

import pytest

from consumers.telemetry_sink import TelemetrySink
from serving.errors import InvalidRequest
from serving.reference_model import SAMPLE
from tests.clickhouse_db import migrated_store, private_settings

pytestmark = pytest.mark.stack

ROWS_SQL = """
SELECT row_index, prediction_id, row_key, prediction, confidence, numeric_values, categorical_values
FROM inference_rows FINAL WHERE request_id = {r:String} ORDER BY row_index
"""


def _rows(settings, store, request_id: str, expect: int) -> list[dict]:
    sink = TelemetrySink(settings, store, group_id=f"rows-{uuid.uuid4().hex[:8]}", max_wait_s=0.1)
    deadline = time.monotonic() + 60
    while True:
        sink.run(idle_timeout=2.0)
        rows = store.query_rows(ROWS_SQL, {"r": request_id})
        if len(rows) >= expect or time.monotonic() > deadline:
            return rows


def test_a_batch_of_64_rows_lands_as_64_rows_with_predictions_ids_and_keys(deployed_churn, model_client,
                                                                           serving_settings, clickhouse_owner):
    batch = {k: list(v) * 16 for k, v in SAMPLE.items()}
    keys = [f"order-{i}" for i in range(64)]
    answer = model_client.predict_rows("churn", batch, row_keys=keys)
    sig = model_client.signature("churn")
    scores, label = (answer.outputs[o.name] for o in sig.outputs)
    assert answer.prediction_ids == [f"{answer.request_id}:{i}" for i in range(64)]

    settings = private_settings(serving_settings, clickhouse_owner.url)
    with migrated_store(settings) as store:
        rows = _rows(settings, store, answer.request_id, 64)
        assert [r["row_index"] for r in rows] == list(range(64))
        assert [r["prediction_id"] for r in rows] == answer.prediction_ids
        assert [r["row_key"] for r in rows] == keys
        assert [r["prediction"] for r in rows] == [sig.labels[int(k)] for k in label.reshape(-1)]
        assert [r["confidence"] for r in rows] == pytest.approx(
            [float(scores[i, int(label[i, 0])]) for i in range(64)], rel=1e-5)
        assert [r["numeric_values"] for r in rows] == [[a, b] for a, b in zip(batch["age"], batch["income"])]
        assert [r["categorical_values"] for r in rows] == [[v] for v in batch["region"]]
        served = store.query_rows("SELECT sum(rows) AS n FROM rows_minute WHERE model_name = 'churn'")[0]["n"]
        assert served >= 64      # the minute aggregate counts rows (other tests' requests may add more)


@pytest.mark.parametrize("keys,message", [
    (["a", "b", "c"], "has 3 keys for 4 rows"),
    (["a", "b", "c", ""], "non-empty strings"),
])
def test_row_keys_that_do_not_fit_the_request_are_refused_with_the_reason(deployed_churn, model_client, keys,
                                                                         message):
    with pytest.raises(InvalidRequest, match=message):
        model_client.predict_rows("churn", SAMPLE, row_keys=keys)
