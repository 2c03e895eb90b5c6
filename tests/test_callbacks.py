"""Callbacks: the events arrive in order, a callback can stop training, the built-ins do their job."""
import csv
from types import SimpleNamespace

import pytest
import torch

import nndl
from nndl.base import config
from nndl.training.callbacks import Callback, CSVLogger, EarlyStopping, TrainState
from nndl.training.engine import ModuleWeights, StopPolicy
from nndl.base.errors import NndlError
from nndl.nn.models import build_regressor

QUIET = dict(progress=False, figures=False, echo=lambda s: None)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


class Recorder(Callback):
    """Every event with the fold and epoch it came with."""

    def __init__(self):
        self.events = []

    def on_run_begin(self, run):
        self.events.append(("run_begin", run.task))

    def on_train_begin(self, state):
        self.events.append(("train_begin", state.fold, state.epoch))

    def on_epoch_begin(self, state):
        self.events.append(("epoch_begin", state.fold, state.epoch))

    def on_epoch_end(self, state, logs):
        assert logs is state.history[-1]  # the row just appended to the history
        self.events.append(("epoch_end", state.fold, logs["epoch"]))

    def on_train_end(self, state, result):
        self.events.append(("train_end", state.fold, result.stop_reason))

    def on_run_end(self, run):
        self.events.append(("run_end", sorted(run.metrics)[:1]))

    def of_fold(self, fold):
        return [e for e in self.events if len(e) > 1 and e[1] == fold and e[0] != "run_begin"]


def sine_problem(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=g) * 6 - 3
    return x, torch.sin(x[:, 0]) + 0.05 * torch.randn(n, generator=g)


def small_cfg(**kw):
    return config.resolve("regress", "seed", {"hidden": [16], "epochs": 6, "batch_size": 16, "lr": 0.01, **kw})


def one_training(epochs, fold=None, stop=""):
    expected = [("train_begin", fold, 0)]
    for e in range(1, epochs + 1):
        expected += [("epoch_begin", fold, e), ("epoch_end", fold, e)]
    return expected + [("train_end", fold, stop or "completed")]


def test_train_calls_events_in_order():
    x, y = sine_problem()
    cfg = small_cfg()
    rec = Recorder()
    res = nndl.train(build_regressor(cfg, 1), x[:48], y[:48], cfg, task="regression", x_val=x[48:], y_val=y[48:],
                     progress=False, callbacks=[rec])
    assert rec.events == one_training(6)
    assert len(res.history) == 6 and {"train_loss", "val_loss", "lr"} <= set(res.history[0])


class StopAt(Callback):
    def __init__(self, epoch, fold=None):
        self.epoch, self.fold = epoch, fold

    def on_epoch_end(self, state, logs):
        if logs["epoch"] == self.epoch and (self.fold is None or state.fold == self.fold):
            state.request_stop(f"enough at {self.epoch}")


def test_a_callback_stops_training_and_a_function_is_an_epoch_end_callback():
    x, y = sine_problem()
    cfg = small_cfg(epochs=50)
    seen = []
    res = nndl.train(build_regressor(cfg, 1), x, y, cfg, task="regression", progress=False,
                     callbacks=[StopAt(3), lambda state, logs: seen.append(logs["epoch"])])
    assert len(res.history) == 3 and res.stop_reason == "enough at 3"
    assert seen == [1, 2, 3]


def test_early_stopping_stops_and_restores_the_best_weights():
    x, y = sine_problem()
    cfg = small_cfg(epochs=40)
    snapshots = {}

    class Snap(Callback):
        def on_epoch_end(self, state, logs):
            snapshots[logs["epoch"]] = {k: v.clone() for k, v in state.model.state_dict().items()}

    model = build_regressor(cfg, 1)
    # train_loss falls every epoch here, so "max" mode sees epoch 1 as the best and stops after `patience` more.
    stopper = EarlyStopping(monitor="train_loss", patience=3, mode="max", warmup=0)
    res = nndl.train(model, x, y, cfg, task="regression", progress=False, callbacks=[Snap(), stopper])
    assert len(res.history) == 4 and "train_loss did not improve for 3 epochs" in res.stop_reason
    assert res.best_epoch == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k


def _epoch_weights(model, epoch):
    with torch.no_grad():
        model.weight.fill_(epoch)  # the weights name the epoch that made them


@pytest.mark.parametrize("scores, higher, min_delta, stop, best", [
    ([3, 2, 2, 2.5, 1.9, 2.0, 2.1, 2.2, 0.1], False, 0.0, 8, 5),  # a tie is no improvement: the first epoch stays
    ([3, 2, 1.95, 1.92, 1.91, 1.5], False, 0.1, 5, 2),             # steps under min_delta do not count
    ([0.5, 0.7, 0.6, 0.7, 0.69, 0.9], True, 0.0, 5, 2),            # accuracy: maximised
    ([5, 4, 3, 2], False, 0.0, None, 4),                           # never stops early: best is the last
])
def test_early_stopping_and_the_stop_policy_agree(scores, higher, min_delta, stop, best):
    """The callback and the engine's StopPolicy, fed the same scores, stop at the same epoch and keep the
    same best epoch, value and weights."""
    model = torch.nn.Linear(1, 1)
    state = TrainState("regression", SimpleNamespace(epochs=len(scores)), model=model)
    stopper = EarlyStopping(monitor="val_loss", patience=3, mode="max" if higher else "min", min_delta=min_delta,
                            warmup=0)
    stopper.on_train_begin(state)
    for epoch, score in enumerate(scores, 1):
        state.epoch = epoch
        _epoch_weights(model, epoch)
        stopper.on_epoch_end(state, {"epoch": epoch, "val_loss": score})
        if state.stop_requested:
            break
    result = SimpleNamespace(diverged=False, best_epoch=None, best_metric=None)
    stopper.on_train_end(state, result)

    other = torch.nn.Linear(1, 1)
    policy = StopPolicy(ModuleWeights(other), patience=[3], epochs=[len(scores)], lr=[0.1], higher=higher,
                        min_delta=min_delta)
    for e, score in enumerate(scores):
        _epoch_weights(other, e + 1)
        if policy.update(e, [score]):
            break
    policy.finish()

    assert (epoch if state.stop_requested else None) == stop
    assert policy.reason[0] == ("completed" if stop is None else "early stop: no improvement for 3 epochs")
    assert e + 1 == epoch  # both ran the same epochs
    assert result.best_epoch == policy.best_epoch[0] == best
    assert result.best_metric == policy.best_metric[0] == scores[best - 1]
    assert model.weight.item() == other.weight.item() == best
    if stop is not None:
        assert f"(best {scores[best - 1]:.6g} at epoch {best})" in state.stop_reason


def test_early_stopping_learns_a_usable_model():
    x, y = sine_problem(96)
    cfg = small_cfg(epochs=400, hidden=[32], activation="tanh")
    res = nndl.train(build_regressor(cfg, 1), x[:72], y[:72], cfg, task="regression", x_val=x[72:], y_val=y[72:],
                     progress=False, callbacks=[EarlyStopping(patience=15)])
    best_val = min(r["val_loss"] for r in res.history)
    assert best_val < 0.2 * y.var().item()  # far better than predicting the mean
    assert res.best_metric == pytest.approx(best_val)


@pytest.mark.parametrize("batched", [True, False])
def test_regress_sends_every_fold_and_the_refit_through_the_callbacks(tmp_path, batched):
    rec = Recorder()
    run = nndl.regress(out=tmp_path / "r", overrides={"epochs": 5, "folds": 3, "batched": batched},
                       callbacks=[rec, StopAt(2, fold=2)], **QUIET)
    assert rec.events[0] == ("run_begin", "regress") and rec.events[-1][0] == "run_end"
    assert rec.of_fold(1) == one_training(5, 1)
    assert rec.of_fold(2) == one_training(2, 2, "enough at 2")  # only fold 2 stopped
    assert rec.of_fold(3) == one_training(5, 3)
    assert rec.of_fold("refit") == one_training(5, "refit")
    per_fold = {f["fold"]: f["stop_reason"] for f in run["per_fold"]}
    assert per_fold[2] == "enough at 2" and per_fold[1] == "completed"
    rows = [r for r in run.history if str(r["fold"]) == "2"]
    assert len(rows) == 2


def test_csv_logger_writes_each_row_as_the_epoch_ends(tmp_path):
    path = tmp_path / "live.csv"
    rows_seen = []

    class ReadBack(Callback):  # after the logger: its row must already be on disk
        def on_epoch_end(self, state, logs):
            with open(path, newline="") as fh:
                rows_seen.append(len(list(csv.DictReader(fh))))

    nndl.regress(out=tmp_path / "r", overrides={"epochs": 4, "folds": 2}, callbacks=[CSVLogger(path), ReadBack()],
                 **QUIET)
    assert rows_seen == list(range(1, len(rows_seen) + 1)) and len(rows_seen) == 2 * 4 + 4
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["fold"] for r in rows[:4]] == ["1", "2", "1", "2"] and rows[-1]["fold"] == "refit"
    assert all(float(r["train_loss"]) > 0 and float(r["wall_time"]) > 0 for r in rows)


def test_csv_logger_defaults_into_the_run_folder(tmp_path):
    nndl.regress(out=tmp_path / "r", overrides={"epochs": 2, "folds": 2}, callbacks=[CSVLogger()], **QUIET)
    assert (tmp_path / "r/live_history.csv").read_text().count("\n") == 1 + 2 * 2 + 2


@pytest.mark.parametrize("bad, message", [(["not a callback"], "neither an nndl.training.callbacks.Callback"),
                                          ([EarlyStopping], "pass an instance, e.g. EarlyStopping()")])
def test_bad_callbacks_are_rejected_before_anything_is_written(tmp_path, bad, message):
    with pytest.raises(NndlError, match=message):
        nndl.regress(out=tmp_path / "r", overrides={"epochs": 2, "folds": 2}, callbacks=bad, **QUIET)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("kwargs, message", [({"patience": 0}, "patience must be >= 1"),
                                             ({"mode": "up"}, "choose auto, min or max")])
def test_early_stopping_bad_settings(kwargs, message):
    with pytest.raises(NndlError, match=message):
        EarlyStopping(**kwargs)


@pytest.mark.parametrize("batched", [True, False])
def test_early_stopping_restores_each_fold_model_in_cross_validation(tmp_path, batched):
    run = nndl.regress(out=tmp_path / "r", overrides={"epochs": 60, "folds": 3, "batched": batched, "lr": 0.05},
                       callbacks=[EarlyStopping(patience=3, warmup=0)], **QUIET)
    stopped = 0
    for fold in run["per_fold"]:
        losses = [r["val_loss"] for r in run.history if str(r["fold"]) == str(fold["fold"])]
        best = min(range(len(losses)), key=losses.__getitem__)
        if "did not improve for 3 epochs" in fold["stop_reason"]:
            stopped += 1
            assert len(losses) == best + 1 + 3  # stopped exactly `patience` epochs after the best
        assert fold["best_epoch"] == best + 1
        # The fold model is scored after training: with the best epoch's weights back, its held-out MSE is that epoch's.
        assert fold["val_mse"] == pytest.approx(losses[best], rel=1e-4)
    assert stopped >= 1
