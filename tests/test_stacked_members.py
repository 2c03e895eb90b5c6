"""Models with different hyperparameters trained as one stack equal the same models trained one by one.

This is what lets a search train its trials together: each stacked model keeps its own
lr, weight decay, L1, epochs, schedule and patience, and gets its own gradient and update.
"""
import pytest
import torch

from nndl.base import config
from nndl.training.crossval import cross_validate, cross_validate_many
from nndl.training.stacked import PerModelOptimizer, stack_key
from nndl.base.errors import NndlError
from nndl.tasks.regress.task import load_data, make_model_factory
from nndl.tasks.regress.config import RegressConfig

VARIANTS = [{"lr": 0.02},
            {"lr": 0.005, "weight_decay": 1e-3, "schedule": "cosine"},
            {"lr": 0.01, "epochs": 25, "l1": 1e-4, "patience": 5, "schedule": "onecycle"}]


def data(cfg):
    d = load_data(cfg)[0]
    return torch.as_tensor(d.x), torch.as_tensor(d.y)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_stacked_trials_equal_one_by_one(optimizer):
    cfgs = [config.resolve("regress", "seed", {"optimizer": optimizer, "nesterov": optimizer == "sgd", "epochs": 40, "folds": 3,
                                               "hidden": [32, 32], **v}) for v in VARIANTS]
    x, y = data(cfgs[0])
    factories = [make_model_factory(c, x, y) for c in cfgs]
    stacked = cross_validate_many(factories, x, y, cfgs)
    assert [len(folds) for folds in stacked] == [3, 3, 3]
    for cfg, factory, folds in zip(cfgs, factories, stacked):
        alone = cross_validate(factory, x, y, cfg, batched=False, progress=False)
        for a, b in zip(alone, folds):
            assert len(a.result.history) == len(b.result.history) <= cfg.epochs
            assert a.result.best_epoch == b.result.best_epoch and a.result.stop_reason == b.result.stop_reason
            assert b.val_mse == pytest.approx(a.val_mse, rel=1e-4) and b.train_mse == pytest.approx(a.train_mse, rel=1e-4)
            for p, q in zip(a.model.parameters(), b.model.parameters()):
                torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
            assert [r["lr"] for r in a.result.history] == pytest.approx([r["lr"] for r in b.result.history])


def test_per_model_adam_matches_torch_adam():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 5, requires_grad=True)
    alone = [w[i].detach().clone().requires_grad_() for i in range(3)]
    lrs, decays = [0.1, 0.01, 0.0], [0.0, 0.1, 0.5]
    stacked = PerModelOptimizer([w], RegressConfig(optimizer="adamw"), torch.tensor(decays))
    refs = [torch.optim.AdamW([p], lr=lr, weight_decay=wd) for p, lr, wd in zip(alone, lrs, decays)]
    for _ in range(5):
        target = torch.randn(4, 5)
        ((w - target) ** 2).sum().backward()
        stacked.step(torch.tensor(lrs))
        stacked.zero_grad()
        for p, opt in zip(alone, refs):
            ((p - target) ** 2).sum().backward()
            opt.step()
            opt.zero_grad()
    for i, p in enumerate(alone):
        torch.testing.assert_close(w[i], p)
    torch.manual_seed(0)
    assert torch.equal(w[2].detach(), torch.randn(3, 4, 5)[2])  # lr 0: that model never moved, decay included


def test_configs_that_cannot_share_a_stack_are_refused():
    a = config.resolve("regress", "seed", {"lr": 0.1})
    b = config.resolve("regress", "seed", {"lr": 0.01, "epochs": 10})
    c = config.resolve("regress", "seed", {"hidden": [8]})
    assert stack_key(a) == stack_key(b) != stack_key(c)
    x, y = data(a)
    with pytest.raises(NndlError, match="differ only in"):
        cross_validate_many([make_model_factory(cfg, x, y) for cfg in (a, c)], x, y, [a, c])


def test_thread_count_changes_time_not_results():
    """The thread probe may switch a stack between 1 and 2 threads mid-training; that is only sound
    because the batched kernels give the same numbers on either count."""
    before = torch.get_num_threads()
    scores = {}
    for threads in (1, 2):
        cfg = config.resolve("regress", "seed", {"epochs": 60, "threads": threads})
        x, y = data(cfg)
        folds = cross_validate(make_model_factory(cfg, x, y), x, y, cfg, batched=True, progress=False)
        scores[threads] = [f.val_mse for f in folds]
    assert scores[1] == scores[2]
    assert torch.get_num_threads() == before


def test_thread_probe_keeps_the_faster_count_drops_it_on_a_stall_and_measures_again():
    from nndl.training.threads import ThreadProbe

    before = torch.get_num_threads()
    try:
        probe = ThreadProbe((1, 2), probe=2, hold=10)
        seconds = {1: 1.0, 2: 0.5}  # two threads are faster here ...
        used = []
        for epoch in range(30):
            probe.begin(epoch)
            used.append(torch.get_num_threads())
            probe.end(epoch, seconds[torch.get_num_threads()])
            if epoch == 9:
                seconds = {1: 1.0, 2: 4.0}  # ... until the machine gets busy
        assert used[:7] == [1, 1, 1, 1, 2, 2, 2]  # warm-up, then each count: one unmeasured epoch + two measured
        assert used[7:11] == [2] * 4  # chosen; epoch 10 stalls (4.0 > 3 x 0.5) ...
        assert used[11:21] == [1] * 10  # ... so one thread at once, held for 10 epochs
        assert used[21:27] == [1, 1, 1, 2, 2, 2] and used[27:] == [1] * 3  # measured again: one thread wins
        uneven = ThreadProbe((1, 2), probe=3, hold=10)  # mostly fast, one stall among the measured epochs
        for epoch, (threads, secs) in enumerate([(1, 1)] * 5 + [(2, 0.1), (2, 0.3), (2, 0.3), (2, 1.2)]):
            uneven.begin(epoch)
            uneven.end(epoch, secs)
        assert uneven.current == 1  # a mean of 0.6 < 0.8 x 1, but not steady: one thread is kept
    finally:
        torch.set_num_threads(before)


def test_batched_cv_probes_threads_and_restores_the_callers_count():
    from nndl.training.threads import thread_policy

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = config.resolve("regress", "seed", {"epochs": 30})
        x, y = data(cfg)
        seen = set()

        def spy(state, logs):
            seen.add(torch.get_num_threads())

        with thread_policy(0.0):  # tiny work: one thread, the caller (2 threads) probed during training
            cross_validate(make_model_factory(cfg, x, y), x, y, cfg, batched=True, progress=False, callbacks=[spy])
            assert torch.get_num_threads() == 1
        assert seen == {1, 2} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
