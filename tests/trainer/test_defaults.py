"""The default budget (trainer.defaults via TrainingSpec.resolved), early stopping and the automatic search.

Real torch on tiny data: every fit here is a few hundred steps of a small MLP.
"""

import time

import pytest
import torch

from trainer import defaults as D
from trainer.loop import TensorSet, fit, loss_function
from trainer.models import ModelConfig, build_model
from trainer.run import train_and_evaluate
from trainer.spec import TrainingSpec

CPU = torch.device("cpu")


@pytest.mark.parametrize("n_train", [40, 300, 5_000, 200_000])
def test_budget_follows_the_row_count_within_its_bounds(n_train):
    spec = TrainingSpec().resolved(n_train)
    assert D.MIN_BATCH <= spec.batch_size <= D.MAX_BATCH and spec.batch_size & (spec.batch_size - 1) == 0
    assert D.MIN_EPOCHS <= spec.epochs <= D.MAX_EPOCHS
    assert D.MIN_PATIENCE <= spec.early_stopping_patience <= D.MAX_PATIENCE
    assert spec.lr == D.LR and spec.search_trials == D.SEARCH_TRIALS


def test_small_data_gets_small_batches_and_more_epochs_than_large_data():
    small, large = TrainingSpec().resolved(300), TrainingSpec().resolved(50_000)
    assert small.batch_size < large.batch_size and small.epochs > large.epochs
    assert large.epochs * -(-50_000 // large.batch_size) >= D.TARGET_STEPS   # the step budget is reached


def test_hand_set_fields_are_kept_and_switch_the_search_off():
    spec = TrainingSpec(epochs=7, early_stopping_patience=None).resolved(1000)
    assert spec.epochs == 7 and spec.early_stopping_patience is None and spec.search_trials == 0
    assert TrainingSpec(batch_size=16, search_trials=2).resolved(1000).search_trials == 2
    assert TrainingSpec().spec_hash() == TrainingSpec(epochs="auto").spec_hash()   # run ids of pushes unchanged


def _toy(n=256, flip=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = ((x[:, 0] + 0.5 * torch.randn(n, generator=g)) > 0).long()
    return TensorSet((x, torch.zeros((n, 0), dtype=torch.long)), 1 - y if flip else y)


def _mlp():
    torch.manual_seed(0)
    return build_model(ModelConfig(kind="mlp", n_outputs=2, hidden_sizes=(8,), dropout=0.0, n_numeric=3))


def test_auto_early_stopping_ends_the_run_and_the_progress_bar_at_the_real_end():
    # Validation labels are flipped: validation loss worsens from the first epochs, so patience fires.
    events = []
    spec = TrainingSpec(device="cpu", hidden_sizes=(8,))
    resolved = spec.resolved(256)
    result = fit(_mlp(), _toy(), _toy(flip=True), spec, task="binary", device=CPU,
                 progress=lambda stage, done, total: events.append((stage, done, total)))
    assert result.stopped_early and result.epochs_run < resolved.epochs
    assert result.epochs_run - result.best_epoch == resolved.early_stopping_patience
    epochs = [e for e in events if e[0] == "epoch"]
    assert epochs[-1] == ("epoch", result.epochs_run, result.epochs_run)   # the bar is full where training ended
    assert all(total == resolved.epochs for _, _, total in epochs[:-1])


def test_the_deadline_stops_training_with_the_best_weights_so_far():
    spec = TrainingSpec(device="cpu", hidden_sizes=(8,), epochs=10_000, early_stopping_patience=None)
    t0 = time.monotonic()
    result = fit(_mlp(), _toy(), _toy(seed=1), spec, task="binary", device=CPU, deadline=t0 + 0.5)
    assert result.epochs_run < 10_000 and result.stopped_early
    assert time.monotonic() - t0 < 5
    assert any("time budget" in w for w in result.warnings)


def test_the_search_runs_only_when_the_first_candidate_loses_on_validation(tabular, make_info, tmp_path):
    """A 1-epoch first candidate with a tiny learning rate loses to the linear baseline; the search must pick a
    better one on the validation split and record what it tried."""
    info = make_info()
    weak = dict(device="cpu", epochs=1, lr=1e-5, hidden_sizes=(8,), min_slice_rows=5, time_budget_s=20.0)
    res = train_and_evaluate(tabular(n=400), info, TrainingSpec(**weak, search_trials=2), tmp_path / "a")
    search = res.params["auto_search"]
    assert search["first_val"] < search["baseline_val"] and len(search["trials"]) == 2
    assert search["chosen"].startswith("trial ")
    best_trial = max(t["val"] for t in search["trials"])
    assert best_trial > search["first_val"]
    strong = train_and_evaluate(tabular(n=400), info, TrainingSpec(**{**weak, "epochs": 40, "lr": 3e-3},
                                                                   search_trials=2), tmp_path / "b")
    s = strong.params["auto_search"]
    assert (s["trials"] == []) == (s["first_val"] > s["baseline_val"]) and s["reason"]
    assert "auto_search" not in train_and_evaluate(tabular(n=400), info, TrainingSpec(**weak),
                                                   tmp_path / "c").params


def test_multiclass_loss_weights_rare_classes_and_keeps_the_average_row_weight_at_one():
    counts = [900, 90, 10]
    w = D.class_weights("multiclass", counts)
    assert w[0] < w[1] < w[2]
    assert w[2] / w[0] == pytest.approx((900 / 10) ** D.CLASS_WEIGHT_POWER)
    assert sum(wi * c for wi, c in zip(w, counts)) / sum(counts) == pytest.approx(1.0)
    assert D.class_weights("binary", [900, 100]) is None and D.class_weights("regression", []) is None


def test_the_weighted_loss_counts_a_rare_class_more_than_plain_cross_entropy():
    target = torch.tensor([0] * 90 + [1] * 10)
    logits = torch.zeros(100, 2)
    logits[:, 0] = 2.0                                   # always predicts the common class
    plain = loss_function("binary", target)(logits, target)
    weighted = loss_function("multiclass", target)(logits, target)
    rare = target == 1
    assert plain == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item())
    # Row weights 90**-0.5 : 10**-0.5, normalised: the rare rows' large loss pulls the mean up.
    w = torch.tensor(D.class_weights("multiclass", [90, 10]))[target]
    per_row = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert weighted == pytest.approx((w * per_row).sum().item() / w.sum().item())
    assert weighted > plain and per_row[rare].mean() > per_row[~rare].mean()


def test_the_default_run_trains_an_ensemble_and_a_hand_set_budget_one_network():
    from trainer.defaults import ENSEMBLE_SIZE

    assert TrainingSpec().resolved(500).ensemble == ENSEMBLE_SIZE
    assert TrainingSpec(epochs=5).resolved(500).ensemble == 1
    assert TrainingSpec(register_model=False).resolved(500).ensemble == 1      # a search's trial
    assert TrainingSpec(world_size=2).resolved(500).ensemble == 1
    assert TrainingSpec(epochs=5, ensemble=3).resolved(500).ensemble == 3


def test_a_stop_request_ends_a_search_trial_like_the_first_candidate():
    """Before, trials ignored the stop request: a stopping consumer trained every remaining trial first."""
    from trainer.auto import Candidate, search
    from trainer.errors import TrainingStopped

    spec = TrainingSpec(epochs=3, batch_size=64, lr=0.01, search_trials=2, device="cpu").resolved(256)
    cfg = ModelConfig(kind="mlp", n_outputs=2, hidden_sizes=(8,), dropout=0.0, n_numeric=3)
    first = Candidate(_mlp(), None, spec, cfg, 0.5)       # loses to the baseline below: the search runs
    kwargs = dict(train=_toy(), val=_toy(seed=1), task="binary", device=torch.device("cpu"), score=lambda net: 0.6,
                  baselines={"majority": 0.9}, higher=True, deadline=None)
    with pytest.raises(TrainingStopped):
        search(first, **kwargs, should_stop=lambda: True)
    best, report = search(first, **kwargs)                 # no stop request: both trials run
    assert len(report.trials) == 2 and best is not first


def test_ensemble_members_after_the_deadline_are_not_trained():
    from trainer.auto import Candidate, ensemble
    from trainer.models import SeedEnsemble

    spec = TrainingSpec(epochs=2, batch_size=64, ensemble=3, lr=0.01, device="cpu").resolved(256)
    cfg = ModelConfig(kind="mlp", n_outputs=2, hidden_sizes=(8,), dropout=0.0, n_numeric=3)
    first = Candidate(_mlp(), None, spec, cfg, 0.0)
    net, n = ensemble(first, train=_toy(), val=_toy(seed=1), task="binary", device=torch.device("cpu"),
                      deadline=time.monotonic() - 1)
    assert n == 1 and net is first.net
    net, n = ensemble(first, train=_toy(), val=_toy(seed=1), task="binary", device=torch.device("cpu"),
                      deadline=None)
    assert n == 3 and isinstance(net, SeedEnsemble) and net.members[0] is first.net
    seeds_differ = [torch.equal(net.members[0].body[0].weight, m.body[0].weight) for m in net.members[1:]]
    assert seeds_differ == [False, False]


def test_a_stop_request_ends_the_ensemble_like_the_first_candidate():
    from trainer.auto import Candidate, ensemble
    from trainer.errors import TrainingStopped

    spec = TrainingSpec(epochs=3, batch_size=64, ensemble=3, lr=0.01, device="cpu").resolved(256)
    cfg = ModelConfig(kind="mlp", n_outputs=2, hidden_sizes=(8,), dropout=0.0, n_numeric=3)
    with pytest.raises(TrainingStopped):
        ensemble(Candidate(_mlp(), None, spec, cfg, 0.0), train=_toy(), val=_toy(seed=1), task="binary",
                 device=torch.device("cpu"), deadline=None, should_stop=lambda: True)
