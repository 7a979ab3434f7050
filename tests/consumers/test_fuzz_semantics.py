"""Schema-valid but semantically invalid events (issue #8): whatever a producer put in the fields, the
consumers' own checks answer with their documented outcome, never with a stray exception (which the
runner would retry five times and then dead-letter as 'retries-exhausted').

* training: a DatasetCreated / TrainingRequested becomes a Job or a JobError (published as a failed run);
* deployer: a ModelRegistered gets a gate decision, and ``Deployer.deploy`` a failed DeployResult for a
  bad name, version or artifact URI, with nothing written outside the model repository;
* gate: a non-finite primary metric never passes.

Events go through the real codec first, so handlers see exactly what the runner hands them.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from infra.kafka.envelope import Envelope
from infra.settings import load_settings
from schemas import AvroCodec, catalog
from tests.fuzz_strategies import avro_values, hostile_names, is_inert_segment, plain_names

EVENTS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODEC = AvroCodec()
# Half plain names, so the properties also see events that resolve, not only refusals.
NAMES = st.booleans().flatmap(lambda plain: plain_names(20) if plain else st.one_of(hostile_names(), st.just("")))


def decoded(event_type: str, value: dict) -> dict:
    return CODEC.decode(CODEC.encode(event_type, value)).value


def envelope(event_type: str, value: dict) -> Envelope:
    return Envelope(key=None, value=value, event_type=event_type, topic="t", partition=0, offset=0,
                    event_id=str(value["header"]["event_id"]))


@st.composite
def events_with(draw, event_type: str, **fields) -> dict:
    """A random schema-valid event of ``event_type`` whose named fields come from the given strategies."""
    value = draw(avro_values(catalog().get(event_type).expanded))
    for name, strategy in fields.items():
        value[name] = draw(strategy)
    return decoded(event_type, value)


def _resolver(tmp: str):
    from consumers.training.jobs import JobResolver
    from infra.storage.local import LocalStore

    settings_ = load_settings(stack={"data_dir": tmp}, artifacts={"root": f"{tmp}/artifacts"})
    return JobResolver(settings_, LocalStore(f"{tmp}/artifacts"))


def check_job_or_refusal(env: Envelope) -> None:
    from consumers.training.jobs import JobError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            job = _resolver(tmp).resolve(env)
        except JobError as exc:
            assert str(exc) and exc.job.trigger_id == env.event_id and exc.job.run_id
            event(f"refused: {str(exc).split(':')[0][:40]}")
            return
        assert is_inert_segment(job.dataset_name) and is_inert_segment(job.model_name)
        assert job.run_id.startswith(job.dataset_name + "-")
        event("resolved")


@EVENTS
@given(events_with("DatasetCreated", name=NAMES, task=st.sampled_from(["binary", "multiclass", "regression", ""]),
                   label_column=NAMES, feature_columns=st.lists(NAMES, max_size=3),
                   slice_columns=st.lists(NAMES, max_size=2),
                   image_shape=st.one_of(st.just([]), st.lists(st.integers(-2, 30), max_size=4)),
                   row_count=st.integers(-10, 10),
                   tags=st.dictionaries(st.just("training_spec"), st.sampled_from(["{}", "[]", "{", '{"epochs": -1}']),
                                        max_size=1)))
def test_dataset_created_becomes_a_job_or_a_job_error(value):
    check_job_or_refusal(envelope("DatasetCreated", value))


@EVENTS
@given(events_with("TrainingRequested", dataset_name=NAMES, dataset_version=st.one_of(st.none(), NAMES),
                   model_name=st.one_of(st.none(), NAMES),
                   spec_json=st.one_of(st.text(max_size=30), st.sampled_from(["{}", "[1]", '{"epochs": "x"}'])),
                   n_trials=st.just(0)))
def test_training_requested_becomes_a_job_or_a_job_error(value):
    check_job_or_refusal(envelope("TrainingRequested", value))


# -- deployer: gate and deploy -------------------------------------------------------------------------------

METRICS = st.dictionaries(st.sampled_from(["roc_auc", "rmse", "accuracy"]),
                          st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf])), max_size=3)


@EVENTS
@given(candidate=events_with("ModelRegistered", primary_metric=st.sampled_from(["roc_auc", "rmse", ""]),
                             metrics=METRICS, baseline_metrics=st.dictionaries(st.text(max_size=4), METRICS,
                                                                               max_size=2)),
       champion=st.one_of(st.none(), events_with("ModelRegistered", metrics=METRICS)))
def test_gate_decides_every_registered_model_and_never_passes_a_non_finite_metric(candidate, champion):
    from serving import gate

    decision = gate.decide(candidate, champion, load_settings())
    value = candidate["metrics"].get(candidate["primary_metric"])
    if value is None or not math.isfinite(value):
        assert not decision.passed and "no finite value" in decision.reason, decision.reason
    if decision.passed:
        assert math.isfinite(decision.metric_value)
    event("passed" if decision.passed else "rejected")


URIS = st.one_of(hostile_names(), st.sampled_from(["/etc", "file:///etc/passwd", "{store}/../outside",
                                                    "{store}/models", "s3://other/models/x"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=events_with("ModelRegistered", model_name=NAMES, model_version=st.integers(-3, 3), artifact_uri=URIS,
                         checksum=st.one_of(st.text(max_size=70), st.just("0" * 64))))
def test_deploy_refuses_bad_names_versions_and_uris_without_touching_triton(value):
    from infra.app.stack.process import free_port
    from infra.storage.local import LocalStore
    from serving.client import ModelClient
    from serving.deploy import Deployer

    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp, "artifacts"))
        (Path(tmp) / "outside").mkdir()
        (Path(tmp) / "outside" / "model.pt").write_bytes(b"not yours")
        value = {**value, "artifact_uri": value["artifact_uri"].replace("{store}", store.root)}
        settings_ = load_settings(stack={"data_dir": tmp}, triton={"repository": f"{tmp}/repo"})
        dead = ModelClient(f"127.0.0.1:{free_port()}", timeout_s=2.0)   # any Triton call would raise
        try:
            result = Deployer(settings_, store, client=dead).deploy(value)
        finally:
            dead.close()
        assert not result.ok and result.stage == "artifact" and result.reason, result
        assert not Path(tmp, "repo").exists() or all(
            is_inert_segment(p.name) for p in Path(tmp, "repo").iterdir()), "repository entry with a bad name"
        assert {p.name for p in Path(tmp).iterdir()} <= {"artifacts", "outside", "repo"}
        assert [p.name for p in Path(tmp, "outside").iterdir()] == ["model.pt"]
        event(result.reason.split(":")[0][:40])
