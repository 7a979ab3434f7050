import math

import pytest
import torch

from trainer.checkpoint import load_checkpoint
from trainer.errors import NonFiniteLossError, TrainingStopped
from trainer.loop import TensorSet, fit
from trainer.models import ModelConfig, build_model
from trainer.run import CHECKPOINT_FILE, train_and_evaluate

CPU = torch.device("cpu")


def _without_timings(history):
    return [{k: v for k, v in h.items() if k not in ("epoch_s", "train_s", "samples_per_s")} for h in history]


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(tabular, make_info, fast, tmp_path):
    df, info, spec = tabular(), make_info(), fast(epochs=4, early_stopping_patience=None)
    straight = train_and_evaluate(df, info, spec, tmp_path / "a")

    seen = []
    with pytest.raises(TrainingStopped, match="after epoch 2"):
        train_and_evaluate(df, info, spec, tmp_path / "b", checkpoint_dir=tmp_path / "ck",
                           on_epoch=lambda e, m: seen.append(e), should_stop=lambda: len(seen) >= 2)
    assert seen == [1, 2]
    assert load_checkpoint(tmp_path / "ck" / CHECKPOINT_FILE)["epoch"] == 2

    resumed = train_and_evaluate(df, info, spec, tmp_path / "c", checkpoint_dir=tmp_path / "ck",
                                 on_epoch=lambda e, m: seen.append(e))
    assert seen == [1, 2, 3, 4]
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 4
    assert resumed.metrics == straight.metrics
    assert _without_timings(resumed.history) == _without_timings(straight.history)


def test_corrupt_checkpoint_is_reported_and_training_restarts(tabular, make_info, fast, tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    reports, epochs = [], []
    result = train_and_evaluate(tabular(), make_info(), fast(epochs=2), tmp_path / "out", checkpoint_dir=ck,
                                on_epoch=lambda e, m: epochs.append(e), on_checkpoint_error=reports.append)
    assert epochs == [1, 2] and result.resumed_from_epoch == 0
    assert len(reports) == 1 and "unreadable" in reports[0] and "from scratch" in reports[0]
    assert any("unreadable" in w for w in result.warnings)
    assert (ck / (CHECKPOINT_FILE + ".corrupt")).exists()
    assert load_checkpoint(ck / CHECKPOINT_FILE)["epoch"] == 2  # a fresh, valid checkpoint replaced it


def test_checkpoint_of_another_spec_is_not_resumed(tabular, make_info, fast, tmp_path):
    df, info = tabular(), make_info()
    train_and_evaluate(df, info, fast(epochs=2), tmp_path / "a", checkpoint_dir=tmp_path / "ck")
    reports = []
    result = train_and_evaluate(df, info, fast(epochs=2, lr=0.01), tmp_path / "b", checkpoint_dir=tmp_path / "ck",
                                on_checkpoint_error=reports.append)
    assert result.resumed_from_epoch == 0
    assert reports and "another run" in reports[0]


def _toy(n=128, flip=False, nan=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = (x[:, 0] > 0).long()
    if flip:
        y = 1 - y
    target = torch.full((n,), float("nan")) if nan else y
    return TensorSet((x, torch.zeros((n, 0), dtype=torch.long)), target)


def _mlp(n_outputs=2):
    torch.manual_seed(0)
    return build_model(ModelConfig(kind="mlp", n_outputs=n_outputs, hidden_sizes=(8,), dropout=0.0, n_numeric=3))


def test_nan_loss_stops_with_a_readable_error(fast):
    with pytest.raises(NonFiniteLossError, match=r"training loss became nan in epoch 1.*learning rate"):
        fit(_mlp(1), _toy(nan=True), _toy(nan=True), fast(), task="regression", device=CPU)


def test_early_stopping_keeps_the_best_weights(fast):
    # Validation labels are the opposite of training labels: every epoch of learning makes validation worse.
    spec = fast(epochs=10, early_stopping_patience=2, lr=0.05, lr_schedule="constant", batch_size=32)
    model = _mlp()
    result = fit(model, _toy(), _toy(flip=True), spec, task="binary", device=CPU)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    val = _toy(flip=True)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model.eval()(*val.inputs), val.target).item()
    assert loss == pytest.approx(result.history[0]["val_loss"], rel=1e-5)
    assert math.isfinite(result.history[-1]["val_loss"])
    assert result.history[-1]["val_loss"] > result.history[0]["val_loss"]


@pytest.mark.parametrize("n_rows", [32, 64, 96, 160, 320])
def test_onecycle_runs_of_a_few_steps_train(fast, n_rows):
    # 160 rows at batch 32 for 2 epochs is 10 steps: a 10 % warmup of one step made OneCycleLR divide by zero.
    spec = fast(epochs=2, batch_size=32, lr_schedule="onecycle", early_stopping_patience=None)
    result = fit(_mlp(), _toy(n_rows), _toy(32), spec, task="binary", device=CPU)
    assert result.epochs_run == 2 and all(math.isfinite(h["val_loss"]) for h in result.history)


def test_onecycle_warmup_leaves_steps_for_both_phases():
    from trainer.loop_state import onecycle_warmup

    assert [onecycle_warmup(n) for n in (1, 2, 3)] == [None, None, None]
    for n in range(4, 200):
        warm = onecycle_warmup(n) * n
        assert warm >= 2 and n - warm >= 2, n
    assert onecycle_warmup(1000) == pytest.approx(0.1)
