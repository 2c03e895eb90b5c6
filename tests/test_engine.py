"""The engine's stop policy, written once for N >= 1 models, and the two loops that use it.

First the policy alone on hand-made per-model loss sequences (the weights are a small stacked
tensor the test moves itself, so every restore can be checked exactly), then the same
situations through ``nndl.train`` (one model) and ``crossval.train_stacked`` (a stack):
they must end with the same stop reasons, messages and best epochs.
"""
import math

import pytest
import torch

from nndl.base import config
from nndl.training.callbacks import Callback
from nndl.training.stacked import train_stacked
from nndl.data.splits import kfold_indices
from nndl.training.engine import ModuleWeights, StackWeights, StopPolicy, lr_factor, train_steps
from nndl.nn.models import build_regressor
from nndl.training.trainer import train

NAN, INF = math.nan, math.inf


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


class FakeClock:
    """Seconds that advance only when the test says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def drive(losses, *, patience, epochs=None, lr=None, higher=False, validated=True, time_limit=0.0, clock=None,
          requests=None, per_epoch_seconds=0.0):
    """Run a policy over ``losses[i][e]`` (model i, epoch e) as a loop would.

    Model i's weights are a row of a (N, 2) tensor set to ``[i, e + 1]`` after epoch e's
    "training", so a restored row names the epoch whose weights it holds. The stack keeps
    moving every row (as Adam's momentum does) to show stopped models are put back.
    """
    n = len(losses)
    w = torch.zeros(n, 2)
    epochs = epochs or [len(losses[0])] * n
    clock = clock or FakeClock()
    policy = StopPolicy(StackWeights([w]), patience=patience if isinstance(patience, list) else [patience] * n,
                        epochs=epochs, lr=lr or [0.1] * n, higher=higher, validated=validated,
                        time_limit=time_limit, clock=clock)
    policy.start()
    ran = [0] * n
    for e in range(max(epochs)):
        policy.epoch_begin()
        w[:, 1] = e + 1  # this epoch's training moves every row, stopped or not
        w[:, 0] = torch.arange(n)
        clock.now += per_epoch_seconds
        rows = [None if policy.stopped[i] else {"train_loss": losses[i][e], "val_loss": losses[i][e]}
                for i in range(n)]
        for i, row in enumerate(rows):
            ran[i] += row is not None
        policy.check_finite(e, rows)
        metrics = [None if r is None or not validated else r["val_loss"] for r in rows]
        policy.update(e, metrics, [(requests or {}).get((i, e + 1)) for i in range(n)])
        if policy.all_stopped() or policy.check_time(e):
            break
    policy.finish()
    return policy, w, ran


def weights_epoch(w, i):
    """The epoch whose weights row i holds (0 = the initial weights)."""
    return int(w[i, 1])


def test_patience_stops_each_model_on_its_own_and_restores_its_best_epoch():
    losses = [[3, 2, 1, 1.5, 1.6, 1.7, 0.5, 0.4],   # best at 3, then 3 bad epochs: stop after epoch 6
              [3, 2, 1, 1.5, 1.6, 1.7, 0.5, 0.4],   # patience 0: trains all 8 epochs, keeps the last weights
              [5, 4, 3, 2, 1, 0.9, 0.8, 0.7]]       # always improving: completed with its last (= best) weights
    policy, w, ran = drive(losses, patience=[3, 0, 3])
    assert policy.reason == ["early stop: no improvement for 3 epochs", "completed", "completed"]
    assert ran == [6, 8, 8]
    assert policy.best_epoch == [3, 8, 8] and policy.best_metric == [1, 0.4, 0.7]
    assert [weights_epoch(w, i) for i in range(3)] == [3, 8, 8]
    assert policy.stopped == [True, True, True] and not any(policy.diverged) and not any(policy.timed_out)


def test_accuracy_is_maximised():
    policy, w, _ = drive([[0.5, 0.7, 0.6, 0.65, 0.69]], patience=3, higher=True)
    assert policy.reason == ["early stop: no improvement for 3 epochs"] and policy.best_epoch == [2]
    assert weights_epoch(w, 0) == 2


@pytest.mark.parametrize("bad, key", [(NAN, "train_loss"), (INF, "train_loss")])
def test_nan_or_inf_rolls_back_to_the_last_finite_weights_and_names_the_lr(bad, key):
    losses = [[1.0, 0.9, 0.8, bad, 0.1, 0.1],
              [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]]
    policy, w, ran = drive(losses, patience=[0, 2], lr=[0.5, 0.01])
    assert policy.diverged == [True, False] and ran == [4, 6]
    assert policy.reason[0] == (f"{key} became {bad} at epoch 4; kept the weights of epoch 3. "
                                "The learning rate (0.5) is probably too high: try --set lr=0.05")
    assert weights_epoch(w, 0) == 3  # the stack moved row 0 on for two more epochs; it was put back
    assert policy.reason[1] == "completed" and weights_epoch(w, 1) == 6


def test_a_diverged_model_is_not_restored_to_its_best_epoch():
    policy, w, _ = drive([[1.0, 0.5, 0.7, NAN, 0.1]], patience=5)
    assert policy.diverged == [True] and policy.best_epoch == [2]
    assert weights_epoch(w, 0) == 3  # the last finite weights, not the best epoch's


def test_time_limit_uses_wall_time_and_stops_only_the_models_still_training():
    clock = FakeClock()
    losses = [[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]]  # model 0 stops early after epoch 3 (patience 2)
    policy, w, ran = drive(losses, patience=[2, 0], time_limit=35.0, clock=clock, per_epoch_seconds=10.0)
    assert ran == [3, 4]
    assert policy.reason == ["early stop: no improvement for 2 epochs", "time limit: stopped after 4 epochs (40 s)"]
    assert policy.timed_out == [False, True]
    assert [weights_epoch(w, i) for i in range(2)] == [1, 4]


def test_time_limit_is_not_a_reason_when_the_last_epoch_completed():
    policy, _, ran = drive([[3, 2, 1]], patience=0, time_limit=5.0, per_epoch_seconds=10.0, epochs=[1])
    assert ran == [1] and policy.reason == ["completed"] and policy.timed_out == [False]


def test_a_resumed_run_counts_its_earlier_seconds():
    clock = FakeClock()
    policy = StopPolicy(StackWeights([torch.zeros(1, 2)]), patience=[0], epochs=[10], lr=[0.1], time_limit=50.0,
                        clock=clock)
    policy.resume(best=policy.best, best_epoch=[0], best_metric=[INF], bad_epochs=[0], elapsed=45.0)
    policy.start()
    clock.now += 6.0
    assert policy.elapsed == pytest.approx(51.0)
    assert policy.check_time(4) == [0] and policy.reason == ["time limit: stopped after 5 epochs (51 s)"]


def test_stop_requests_early_stop_and_completion_take_turns():
    # model 0: a callback asks to stop at epoch 2; model 1: the request comes on the same epoch as an early
    # stop (early stop wins); model 2: the request comes on its last epoch (the request is the reason).
    losses = [[3, 2, 1, 0], [3, 4, 5, 6], [3, 2, 1, 0]]
    requests = {(0, 2): "enough", (1, 3): "enough", (2, 4): "enough at the end"}
    policy, w, ran = drive(losses, patience=[0, 2, 0], requests=requests)
    assert ran == [2, 3, 4]
    assert policy.reason == ["enough", "early stop: no improvement for 2 epochs", "enough at the end"]
    assert [weights_epoch(w, i) for i in range(3)] == [2, 1, 4]  # model 0 kept where it stopped


def test_without_validation_the_best_epoch_is_the_last_one_and_has_no_metric():
    policy, w, _ = drive([[3, 2, 2.5, 2.6]], patience=2, validated=False)
    assert policy.reason == ["completed"] and policy.best_epoch == [4]
    assert math.isnan(policy.best_metric[0])  # never the train loss (2.6) in a validation metric's place
    assert weights_epoch(w, 0) == 4  # no validation: no early stop and no restore


def test_one_module_is_n_equals_one():
    lin = torch.nn.Linear(2, 1)
    policy = StopPolicy(ModuleWeights(lin), patience=[1], epochs=[5], lr=[0.1])
    seen = []
    for e, loss in enumerate([1.0, 0.5, 0.7]):
        policy.epoch_begin()
        with torch.no_grad():
            lin.weight.fill_(e + 1)
        seen.append(e)
        policy.check_finite(e, [{"train_loss": loss, "val_loss": loss}])
        policy.update(e, [loss])
        if policy.all_stopped():
            break
    policy.finish()
    assert policy.reason == ["early stop: no improvement for 1 epochs"] and seen == [0, 1, 2]
    assert torch.all(lin.weight == 2)


def test_per_model_vectors_must_match_the_models():
    with pytest.raises(ValueError, match="one entry per model"):
        StopPolicy(StackWeights([torch.zeros(3, 2)]), patience=[0, 0], epochs=[1, 1, 1], lr=[0.1] * 3)


def test_lr_factor_warms_up_then_decays():
    assert [lr_factor(s, 10, 4, "cosine") for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor(9, 10, 0, "linear") == pytest.approx(0.1)


def test_the_step_loop_can_end_an_epoch_early_and_sees_each_steps_loss():
    """``after_step`` (what the lr finder stops on) sees every step's count, lr and loss; True ends the epoch."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.0)
    seen, lrs_set = [], []

    def batch_loss(idx):
        loss = ((w - idx.float().mean()) ** 2).reshape(1)
        return loss, loss.sum(), len(idx)

    def after_step(step, losses):
        seen.append((step, losses.shape, losses.requires_grad))
        return step == 7

    step, loss_sum, last = train_steps(4, rows=40, batch_size=4, generator=torch.Generator().manual_seed(0),
                                       n_models=1, lr_at=lambda s: [s / 100], set_lr=lrs_set.append,
                                       batch_loss=batch_loss, optimizer=opt, after_step=after_step)
    assert step == 7 and last == [0.06] and lrs_set == [[0.04], [0.05], [0.06]]  # steps 5..7 of the schedule
    assert seen == [(5, torch.Size([1]), False), (6, torch.Size([1]), False), (7, torch.Size([1]), False)]
    assert loss_sum.shape == (1,) and loss_sum.item() > 0


# --------------------------------------------------------------------------- both loops, same situation
def sine(n=60):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=g) * 4 - 2
    return x, torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(n, generator=g)


def cfg_of(**kw):
    return config.resolve("regress", "seed", {"hidden": [16, 16], "epochs": 12, "batch_size": 16, "lr": 0.02,
                                              "folds": 3, **kw})


class FiniteWeights(Callback):
    """Records, at each epoch end, whether the model's weights are all finite."""

    def __init__(self):
        self.finite = []

    def on_epoch_end(self, state, logs):
        self.finite.append(all(torch.isfinite(t).all().item() for _, t in state.named_weights()))


class StopAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, state, logs):
        if logs["epoch"] == self.epoch:
            state.request_stop(f"enough at {self.epoch}")


def both_ways(cfg, callbacks=lambda: []):
    """The first fold trained by ``train`` and by ``train_stacked`` (a stack of one fold and a healthy one)."""
    x, y = sine()
    splits = kfold_indices(len(x), 3, 0)
    tr, va = splits[0]
    torch.manual_seed(0)
    alone_model = build_regressor(cfg, 1)
    stacked_models = [build_regressor(cfg, 1), build_regressor(cfg, 1)]
    stacked_models[0].load_state_dict(alone_model.state_dict())
    cb_alone, cb_stack = callbacks(), callbacks()
    alone = train(alone_model, x[tr], y[tr], cfg, task="regression", x_val=x[va], y_val=y[va], progress=False,
                  callbacks=cb_alone)
    healthy = cfg_of(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer)
    stacked = train_stacked(stacked_models, x, y, [splits[0], splits[1]], [cfg, healthy], progress=False,
                            callbacks=cb_stack)
    return alone, stacked, (alone_model, stacked_models[0]), (cb_alone, cb_stack)


def assert_same_outcome(alone, stacked):
    assert alone.stop_reason == stacked.stop_reason
    assert (alone.diverged, alone.timed_out, alone.best_epoch) == (stacked.diverged, stacked.timed_out,
                                                                    stacked.best_epoch)
    assert len(alone.history) == len(stacked.history)


def test_nan_stop_reads_the_same_from_both_loops_and_callbacks_see_finite_weights():
    cfg = cfg_of(optimizer="sgd", lr=50.0, momentum=0.0)
    alone, (stacked, healthy), (m1, m2), (f1, f2) = both_ways(cfg, lambda: [FiniteWeights()])
    assert_same_outcome(alone, stacked)
    assert alone.diverged and alone.stop_reason.startswith("train_loss became")
    assert "The learning rate (50) is probably too high: try --set lr=5" in alone.stop_reason
    assert healthy.stop_reason == "completed" and not healthy.diverged  # one model's NaN stops only that model
    for p, q in zip(m1.parameters(), m2.parameters()):  # both rolled back to the same last finite weights
        assert torch.isfinite(p).all()
        # the weights are ~1e8 just before the blow-up, so float rounding of the batched sums shows at 1e-4
        torch.testing.assert_close(p, q, rtol=5e-3, atol=1e-5)
    assert all(f1[0].finite) and all(f2[0].finite)


def test_early_stop_reads_the_same_from_both_loops():
    alone, (stacked, _), _, _ = both_ways(cfg_of(lr=0.05, patience=2, epochs=40))
    assert_same_outcome(alone, stacked)
    assert alone.stop_reason == "early stop: no improvement for 2 epochs" and len(alone.history) < 40


def test_a_stop_request_on_the_last_epoch_reads_the_same_from_both_loops():
    alone, (stacked, healthy), _, _ = both_ways(cfg_of(epochs=5), lambda: [StopAt(5)])
    assert_same_outcome(alone, stacked)
    assert alone.stop_reason == "enough at 5"


def test_time_limit_reads_the_same_from_both_loops():
    # Any epoch takes longer than a nanosecond: both loops stop after their first epoch.
    alone, (stacked, healthy), _, _ = both_ways(cfg_of(time_limit=1e-9))
    assert_same_outcome(alone, stacked)
    assert alone.timed_out and alone.stop_reason.startswith("time limit: stopped after 1 epochs (")
    assert healthy.timed_out and len(healthy.history) == 1


# --------------------------------------------------------------------------- one cross-validation for every task
def test_cross_validate_with_a_stratified_splitter_learns_digits():
    """scikit-learn's 8x8 digits: an MLP classifier, stratified 3-fold, through the same cross_validate."""
    from sklearn.datasets import load_digits

    from nndl.training.crossval import cross_validate, stratified_kfold

    digits = load_digits()
    x = torch.tensor(digits.data[:600] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[:600])
    cfg = config.resolve("classify", "mlp", {"epochs": 20, "batch_size": 64, "lr": 0.005})

    def make_model(i):
        torch.manual_seed(i)
        return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    splitter = stratified_kfold(3, seed=0)
    folds = cross_validate(make_model, x, y, cfg, splitter=splitter, task="classification", progress=False)
    assert len(folds) == 3
    for f, (_, va) in zip(folds, splitter(x, y)):
        assert torch.equal(f.val_idx, va)
        share = torch.bincount(y[va], minlength=10) - torch.bincount(y, minlength=10) / 3
        assert share.abs().max() <= 1  # every class keeps its share in every fold, within a row
        assert f.result.history[-1]["val_acc"] > 0.85  # chance is 0.1
        assert math.isnan(f.val_mse)  # MSE scores are for regression


def test_regression_splitters_as_values_match_the_config_names():
    from nndl.training.crossval import blocked_kfold, cross_validate, per_cluster, shuffled_kfold
    from nndl.data.splits import make_splits

    x, y = sine()
    for name, splitter in [("kfold", shuffled_kfold(3, 0)), ("blocked", blocked_kfold(3)),
                           ("cluster", per_cluster(3))]:
        cfg = cfg_of(splitter=name, epochs=3)
        expected = make_splits(x, cfg)
        got = splitter(x, y)
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(expected, got))
    cfg = cfg_of(splitter="blocked", epochs=3)
    factory = lambda i: (torch.manual_seed(i), build_regressor(cfg, 1))[1]  # noqa: E731
    by_name = cross_validate(factory, x, y, cfg, progress=False)
    by_value = cross_validate(factory, x, y, cfg_of(epochs=3), splitter=blocked_kfold(3), progress=False)
    assert [f.val_mse for f in by_name] == [f.val_mse for f in by_value]


def test_on_fold_can_end_the_cross_validation():
    from nndl.training.crossval import cross_validate

    x, y = sine()
    cfg = cfg_of(epochs=2)
    seen = []
    folds = cross_validate(lambda i: build_regressor(cfg, 1), x, y, cfg, progress=False,
                           on_fold=lambda i, fold: seen.append(i) or i == 1)
    assert seen == [0, 1] and len(folds) == 2


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_lean_adam_is_bit_identical_to_torch_fused_adam(kind):
    """LeanAdam skips torch.optim's import cost; it must move weights exactly as torch's fused Adam does,
    including a parameter that gets no gradient (skipped by both)."""
    import torch

    from nndl.tasks.regress.config import RegressConfig
    from nndl.training.trainer import LeanAdam, make_optimizer

    torch.manual_seed(0)
    used, unused = torch.randn(7, 5), torch.randn(3)
    ours = [used.clone().requires_grad_(), unused.clone().requires_grad_()]
    theirs = [used.clone().requires_grad_(), unused.clone().requires_grad_()]
    cfg = RegressConfig(optimizer=kind, lr=0.03, weight_decay=0.01)
    lean = make_optimizer(ours, cfg, resumable=False)
    assert isinstance(lean, LeanAdam)
    ref = (torch.optim.Adam if kind == "adam" else torch.optim.AdamW)(theirs, lr=0.03, weight_decay=0.01, fused=True)
    for step in range(25):
        for params, opt in ((ours, lean), (theirs, ref)):
            opt.param_groups[0]["lr"] = 0.03 * (1 - step / 25)
            opt.zero_grad(set_to_none=True)
            (params[0].sin() ** 2).sum().backward()
            opt.step()
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert not torch.equal(ours[0], used)
