"""v_live_quality against scikit-learn on the same labelled rows: each metric, binary and multiclass, with ties.

The view groups rows before it computes (migration 017), so this checks that every figure is still the
metric it names, on rows a window of real traffic could hold (scores with repeated values, classes the
model never predicts).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from infra.clickhouse.rows import json_each_row

HOUR = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _rows(rng, n: int, k: int, version: int, hour: datetime) -> tuple[list[dict], dict]:
    raw = rng.dirichlet(np.ones(k), size=n)
    scores = np.round(raw, 2)                     # repeated scores: ties the AUC must count as halves
    scores[:, -1] = 1.0 - scores[:, :-1].sum(axis=1)
    pred = scores.argmax(axis=1)
    label = np.where(rng.random(n) < 0.7, pred, rng.integers(0, k, n))
    conf = scores[np.arange(n), pred]
    rows = [{"model_name": "m", "model_version": version, "ref": f"id:{version}:{i}", "prediction_id": f"{i}",
             "served_at": (hour + timedelta(minutes=int(i % 60))).strftime("%Y-%m-%d %H:%M:%S.%f"),
             "observed_at": (hour + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S.%f"), "label_delay_s": 1.0,
             "task": "binary" if k == 2 else "multiclass", "prediction": str(pred[i]), "predicted_index": int(pred[i]),
             "prediction_value": float(pred[i]), "confidence": float(conf[i]), "scores": scores[i].tolist(),
             "label": str(label[i]), "label_index": int(label[i]), "value": None, "categorical_names": [],
             "categorical_values": [], "outcome_event_id": f"o{version}:{i}"} for i in range(n)]
    present = sorted(set(pred) | set(label))
    bins = np.minimum((conf * 10).astype(int), 9)
    ece = sum(abs((pred == label)[bins == b].sum() - conf[bins == b].sum()) for b in range(10)) / n
    if k == 2:
        auc = roc_auc_score(label, scores[:, 1])
    else:
        auc = np.mean([roc_auc_score(label == c, scores[:, c]) for c in range(k) if 0 < (label == c).sum() < n])
    expected = {"labelled": n, "accuracy": accuracy_score(label, pred),
                "macro_f1": f1_score(label, pred, labels=present, average="macro"), "roc_auc": auc,
                "log_loss": log_loss(label, np.clip(scores, 1e-15, None), labels=list(range(k)), normalize=True),
                "calibration_error": ece}
    return rows, expected


@pytest.mark.parametrize("k", [2, 3])
def test_each_live_metric_is_the_one_scikit_learn_computes(store, k):
    rng = np.random.default_rng(k)
    rows1, want1 = _rows(rng, 900, k, 1, HOUR)
    rows2, want2 = _rows(rng, 400, k, 2, HOUR + timedelta(hours=1))
    store.insert_raw("labelled_rows", json_each_row(rows1 + rows2), "JSONEachRow")
    got = {(r["model_version"], r["window_start"]): r for r in store.query_rows(
        "SELECT * FROM v_live_quality WHERE model_name = 'm' ORDER BY model_version")}
    assert set(got) == {(1, HOUR), (2, HOUR + timedelta(hours=1))}
    for (version, _), want in zip(sorted(got), (want1, want2)):
        row = got[(version, HOUR + timedelta(hours=version - 1))]
        assert row["task"] == ("binary" if k == 2 else "multiclass") and row["rmse"] is None
        for name, value in want.items():
            assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-9), (version, name)
