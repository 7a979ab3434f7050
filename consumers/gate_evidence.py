"""The I/O half of the promotion gate: the candidate's test rows with every model's output on them.

``serving.gate`` decides from arrays; this module fetches them. The training
run stored the candidate's and its baselines' outputs on its test split
(``ModelRegistered.test_predictions_uri``, rows identified by content hash).
Here the champion is scored on those very rows: the candidate's dataset
version is read from the dataset store, its rows hashed with the trainer's
rule, the test rows picked by row id, and the champion's TorchScript artifact
(checksum verified, its own preprocessing inside) run on them in-process.

When the champion cannot be scored on these rows (its artifact's inputs are
not columns of this dataset, or its classes differ) the gate gets no champion
outputs and falls back to the reported numbers, saying so in its checks;
storage errors are raised, so the deployer retries rather than deciding on
less evidence than a retry would have.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow.parquet as pq

from infra.storage import ArtifactStore
from producers.datasets.registry import ArtifactDatasetRegistry
from producers.errors import ProducerError
from serving.artifact import fetch_artifact
from serving.errors import ArtifactError
from serving.gate import CANDIDATE, CHAMPION
from serving.paired import PairedRows
from trainer.data import as_table, row_hashes, row_ids
from trainer.errors import TrainerError
from trainer.export import load_exported, predict_columns
from trainer.predictions import read_test_predictions
from trainer.spec import DatasetInfo

log = logging.getLogger("modelbus.consumers.gate_evidence")


def paired_rows(store: ArtifactStore, candidate: Mapping[str, Any],
                champion: Mapping[str, Any] | None) -> PairedRows | None:
    """The candidate's test rows with outputs 'candidate', each baseline and (if scorable) 'champion'.

    None when the candidate carries no test predictions (registered before they were stored).
    """
    uri = candidate.get("test_predictions_uri")
    if not uri:
        return None
    with tempfile.TemporaryDirectory(prefix="modelbus-gate-") as tmp:
        local = store.get_file(store.key_from_uri(uri), Path(tmp) / "test_predictions.parquet")
        ids, y, outputs, slices = read_test_predictions(local)
        if champion is not None:
            try:
                outputs[CHAMPION] = score_champion(store, candidate, champion, ids, Path(tmp))
            except (ArtifactError, ProducerError, TrainerError, KeyError, ValueError) as exc:
                log.warning("stage=gate model=%s: champion v%s cannot be scored on the candidate's test rows (%s); "
                            "comparing reported numbers", candidate.get("model_name"), champion.get("model_version"),
                            exc)
    if CANDIDATE not in outputs:
        raise ValueError(f"{uri} has no candidate outputs")
    return PairedRows(str(candidate.get("task", "")), ids, y, outputs, slices)


def score_champion(store: ArtifactStore, candidate: Mapping[str, Any], champion: Mapping[str, Any],
                   ids: np.ndarray, workdir: Path) -> np.ndarray:
    """The champion artifact's scores on the rows with content ids ``ids`` of the candidate's dataset."""
    registry = ArtifactDatasetRegistry(store)
    ref = f"{candidate['dataset_name']}@{candidate['dataset_version']}"
    found = registry.get(ref)
    info = DatasetInfo.from_event(found.metadata)
    table = as_table(pq.read_table(registry.pull(ref, workdir / "data"), memory_map=False).to_pandas(), info)
    position: dict[str, int] = {}
    for pos, rid in enumerate(row_ids(row_hashes(table, info))):
        position.setdefault(rid, pos)   # identical rows share an id and a prediction
    missing = [r for r in ids if r not in position]
    if missing:
        raise ValueError(f"{len(missing)} test rows (e.g. {missing[0]}) are not in {ref}")
    rows = np.array([position[r] for r in ids], dtype=np.int64)
    artifact = fetch_artifact(store, str(champion["artifact_uri"]), str(champion["checksum"]), workdir / "champion")
    model, sig = load_exported(artifact.dir)
    labels = [str(x) for x in candidate.get("labels") or []]
    if list(sig.get("labels") or []) != labels:
        raise ValueError(f"champion classes {sig.get('labels')} differ from the candidate's {labels}")
    if info.is_image:
        columns: dict[str, Any] = {sig["inputs"][0]["column"]: table.pixels[rows]}
    else:
        frame = table.frame.iloc[rows]
        columns = {i["column"]: frame[i["column"]].tolist() for i in sig["inputs"]}
    scores = predict_columns(model, sig, columns)[sig["outputs"][0]["name"]]
    return scores.reshape(-1) if candidate.get("task") == "regression" else scores
