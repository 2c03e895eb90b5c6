"""MLP classifiers trained as one stack equal the same classifiers trained one by one.

The reference is scikit-learn-style one-by-one training: :class:`nndl.sklearn.NNClassifier` fitted
on each fold (its own input scaling, validation split, seed, dropout). The stack gets the same
freshly initialised networks and rows and must end at the same weights, histories and stop
reasons. Tolerance: weights within 2e-5 absolute (measured: ~1e-6 on CPU after 6 epochs; the
batched and single matmuls round differently), losses within 1e-5 relative.
"""
import numpy as np
import pytest
import torch

from nndl.base.errors import NndlError
from nndl.data.splits import stratified_split
from nndl.sklearn import NNClassifier
from nndl.training.stacked_classify import Member, train_stacked_classifiers

WEIGHT_ATOL = 2e-5


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))  # unequal fold lengths
    return X, y, folds


def stack_inputs(est: NNClassifier, X, y, tr):
    """What NNClassifier.fit(X[tr], y[tr]) trains: its fresh network, rows, validation rows and scaling."""
    cfg = est._resolve_config()
    rows = torch.from_numpy(tr)
    val = None
    if cfg.patience > 0:
        a, b = stratified_split(torch.from_numpy(y[tr]).long(), cfg.val_fraction, seed=cfg.seed)
        rows, val = rows[a], rows[b]
    wrapped = est._build(cfg, (X.shape[1],), len(np.unique(y)), torch.from_numpy(X)[rows])
    return wrapped.net, Member(rows, val, wrapped.mean, wrapped.std), cfg


def one_by_one_and_stacked(X, y, folds, grid, base):
    alone, models, members, cfgs = [], [], [], []
    for params in grid:
        for tr, _ in folds:
            est = NNClassifier(**{**base, **params})
            net, member, cfg = stack_inputs(est, X, y, tr)
            alone.append(est.fit(X[tr], y[tr]))
            models.append(net), members.append(member), cfgs.append(cfg)
    results = train_stacked_classifiers(models, torch.from_numpy(X), torch.from_numpy(y).long(), members, cfgs)
    return alone, models, results


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_stacked_classifiers_equal_one_by_one(digits, optimizer):
    X, y, folds = digits
    grid = [{"lr": 0.01},
            {"lr": 0.003, "weight_decay": 1e-3, "label_smoothing": 0.1, "random_state": 7},
            {"lr": 0.03, "epochs": 8, "patience": 1, "val_fraction": 0.2, "schedule": "cosine"},
            {"lr": 0.005, "l1": 1e-5, "epochs": 3, "schedule": "onecycle"}]
    base = {"hidden": [32, 16], "epochs": 5, "batch_size": 64, "random_state": 0, "optimizer": optimizer}
    alone, models, results = one_by_one_and_stacked(X, y, folds, grid, base)
    assert any(r.stop_reason.startswith("early stop") for r in results) or optimizer == "sgd"
    for est, net, res in zip(alone, models, results):
        assert len(res.history) == len(est.history_)
        assert res.stop_reason == est.stop_reason_
        for p, q in zip(est.model_.net.parameters(), net.parameters()):
            torch.testing.assert_close(q, p, rtol=0, atol=WEIGHT_ATOL)
        for a, b in zip(est.history_, res.history):
            assert set(a) == set(b)
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
            assert b["lr"] == pytest.approx(a["lr"], rel=1e-12)
            if "val_acc" in a:
                assert b["val_acc"] == pytest.approx(a["val_acc"], abs=1e-6)
                assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)


def test_a_diverging_model_stops_alone_with_the_same_reason(digits):
    from nndl.sklearn import FitDivergedError

    X, y, folds = digits
    tr = folds[0][0]
    grid = [{"lr": 0.01}, {"lr": 1e6}]
    base = {"hidden": [16], "epochs": 3, "batch_size": 128, "random_state": 0, "optimizer": "sgd", "momentum": 0.0}
    built = [stack_inputs(NNClassifier(**{**base, **params}), X, y, tr) for params in grid]
    results = train_stacked_classifiers([b[0] for b in built], torch.from_numpy(X), torch.from_numpy(y).long(),
                                        [b[1] for b in built], [b[2] for b in built])
    assert not results[0].diverged and results[1].diverged
    assert all(torch.isfinite(p).all() for p in built[1][0].parameters())  # rolled back to finite weights
    with pytest.raises(FitDivergedError) as alone:
        NNClassifier(**{**base, **grid[1]}).fit(X[tr], y[tr])
    assert results[1].stop_reason.replace("--set ", "") in str(alone.value)
    good = NNClassifier(**{**base, **grid[0]}).fit(X[tr], y[tr])  # the diverging neighbour did not disturb it
    for p, q in zip(good.model_.net.parameters(), built[0][0].parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=WEIGHT_ATOL)


def test_stacked_classifiers_learn(digits):
    X, y, folds = digits
    base = {"hidden": [64], "epochs": 10, "batch_size": 64, "random_state": 0}
    grid = [{"lr": 0.003}, {"lr": 0.01}]
    models, members, cfgs = [], [], []
    for params in grid:
        for tr, _ in folds:
            net, member, cfg = stack_inputs(NNClassifier(**{**base, **params}), X, y, tr)
            models.append(net), members.append(member), cfgs.append(cfg)
    train_stacked_classifiers(models, torch.from_numpy(X), torch.from_numpy(y).long(), members, cfgs)
    for i, net in enumerate(models):
        _, va = folds[i % len(folds)]
        m = members[i]
        with torch.no_grad():
            acc = (net((torch.from_numpy(X[va]) - m.mean) / m.std).argmax(1).numpy() == y[va]).mean()
        assert acc > 0.9, (i, acc)


def test_bad_stacks_are_refused_in_one_line(digits):
    X, y, folds = digits
    tr = folds[0][0]
    x, labels = torch.from_numpy(X), torch.from_numpy(y).long()
    a = stack_inputs(NNClassifier(hidden=[16], random_state=0), X, y, tr)
    b = stack_inputs(NNClassifier(hidden=[32], random_state=0), X, y, tr)
    c = stack_inputs(NNClassifier(hidden=[16], batch_size=32, random_state=0), X, y, tr)
    with pytest.raises(NndlError, match="one shape: model 2 is 64-32-10"):
        train_stacked_classifiers([a[0], b[0]], x, labels, [a[1], b[1]], [a[2], b[2]])
    with pytest.raises(NndlError, match="'batch_size' differs between model 1 and model 2"):
        train_stacked_classifiers([a[0], c[0]], x, labels, [a[1], c[1]], [a[2], c[2]])
    with pytest.raises(NndlError, match="takes MLPs"):
        train_stacked_classifiers([torch.nn.Linear(64, 10)], x, labels, [a[1]], [a[2]])
    with pytest.raises(NndlError, match="one config and one member per model"):
        train_stacked_classifiers([a[0]], x, labels, [a[1], b[1]], [a[2]])
    import dataclasses

    noisy = dataclasses.replace(a[2], noise=0.1)
    with pytest.raises(NndlError, match="'noise' = 0.1: stacked training has no augmentation"):
        train_stacked_classifiers([a[0]], x, labels, [a[1]], [noisy])
    with pytest.raises(NndlError, match="no training rows"):
        train_stacked_classifiers([a[0]], x, labels, [Member(torch.zeros(0, dtype=torch.long))], [a[2]])


def test_each_model_gets_its_own_events(digits):
    from nndl.training.callbacks import Callback

    X, y, folds = digits

    class Count(Callback):
        def __init__(self):
            self.batches, self.epochs = {}, {}

        def on_batch_end(self, state, step, loss):
            self.batches[state.fold] = self.batches.get(state.fold, 0) + 1

        def on_epoch_end(self, state, logs):
            self.epochs[state.fold] = self.epochs.get(state.fold, 0) + 1

    grid = [{"epochs": 2}, {"epochs": 3, "patience": 5, "val_fraction": 0.5}]  # 19 and 10 batches per epoch
    built = [stack_inputs(NNClassifier(hidden=[8], batch_size=64, random_state=0, **g), X, y, folds[0][0])
             for g in grid]
    count = Count()
    train_stacked_classifiers([b[0] for b in built], torch.from_numpy(X), torch.from_numpy(y).long(),
                              [b[1] for b in built], [b[2] for b in built], callbacks=[count])
    per_epoch = [-(-len(b[1].train_idx) // 64) for b in built]
    assert count.epochs == {1: 2, 2: 3}
    assert count.batches == {1: 2 * per_epoch[0], 2: 3 * per_epoch[1]}
