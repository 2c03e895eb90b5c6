"""CNN classifiers trained as one grouped stack equal the same classifiers trained one by one.

The reference is :func:`nndl.training.trainer.train` on each fold, exactly as the classification
task's cross-validation calls it (the fold model seeded with ``seed + fold``, the task's input
transform with its flips and shifts, validation on the held-out fold). The stack gets the same
fresh networks and rows. The networks are the reference CNN (``model=cnn``) at 4/8/8 channels on
310 Fashion-MNIST training images (folds of 104/103/103: unequal last batches).

Tolerance: weights and BN statistics within 1e-3 absolute, train losses within 1e-4 and validation
losses within 5e-4 relative, accuracies within one image of 103 validation images (two of 206 training
images): grouped and single convolutions round differently, and ReLU/max-pool ties amplify it.
Measured at one thread: weights at most 6.4e-4 apart (1e-6..4e-4 for most models), train losses at
most 4.4e-5 and validation losses at most 1.4e-4 relative (where one validation image flipped, in
one of 24 validated epochs). For scale, the one-by-one run of one of these fold models
moves further between 1 and 2 torch threads: weights up to 1.4e-3 apart at lr 0.003 (4.0 at
lr 0.008), train losses 7e-5 relative after one epoch.
"""
import copy
import dataclasses
import math

import pytest
import torch

from conftest import needs_fashion
from nndl.base import config as config_mod
from nndl.base.errors import NndlError
from nndl.tasks.classify import task as classify_task
from nndl.tasks.classify.task import (_cv_rows, classifier_on, cross_validate_classifier,
                                      cross_validate_stacked_classifiers, load_dataset, stack_key, transform_for)
from nndl.training.crossval import stratified_kfold
from nndl.training.stacked_classify import Member, train_stacked_classifiers
from nndl.training.trainer import train

WEIGHT_ATOL, LOSS_REL, VAL_LOSS_REL, ACC_ABS = 1e-3, 1e-4, 5e-4, 1.01 / 103
BASE = {"channels": [4, 8, 8], "subset": 310, "batch_size": 64, "reference": "none", "translate": 1}
GRID = [{"lr": 0.003, "epochs": 3},
        {"lr": 0.005, "weight_decay": 1e-3, "epochs": 4, "patience": 1},
        {"lr": 0.001, "label_smoothing": 0.1, "epochs": 2, "schedule": "onecycle"}]

pytestmark = [needs_fashion, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(autouse=True)
def cnn_stacks_on_cpu(monkeypatch):
    """CNN configs stack on CPU only when asked (they are no faster there): these tests check the stack."""
    monkeypatch.setattr(classify_task, "CNN_STACKS_ON_CPU", True)


def test_on_cpu_cnn_configs_train_one_by_one_by_default(monkeypatch):
    monkeypatch.setattr(classify_task, "CNN_STACKS_ON_CPU", False)
    cfg = config_mod.resolve("classify", "cnn", {"device": "cpu"})
    assert classify_task.stack_key(cfg) is None
    assert classify_task.stack_blocker(cfg).startswith("model=cnn on CPU (a stack of CNNs is no faster there")
    assert classify_task.stack_key(config_mod.resolve("classify", "mlp", {"device": "cpu"})) is not None


@pytest.fixture(scope="module")
def fashion():
    from nndl.data.fashion import load_fashion

    return load_fashion()


def configs(grid, preset="cnn", **extra):
    return [config_mod.resolve("classify", preset, {**BASE, **extra, **g}, 0) for g in grid]


def build(cfgs, ds):
    """Fresh fold models for every config, their members, and the fold rows (as the task's CV makes them)."""
    dev = torch.device("cpu")
    images, labels = _cv_rows(cfgs[0], ds, dev)
    splits = stratified_kfold(3, cfgs[0].seed)(images, labels)
    models, members, per_model = [], [], []
    for c in cfgs:
        for i, (tr, va) in enumerate(splits):
            torch.manual_seed(c.seed + i)
            models.append(classifier_on(c, dev, ds)), members.append(Member(tr, va)), per_model.append(c)
    return images, labels, splits, models, members, per_model


def test_stacked_cnns_equal_one_by_one(fashion):
    cfgs = configs(GRID)
    ds = load_dataset(cfgs[0], fashion)
    images, labels, splits, models, members, per_model = build(cfgs, ds)
    transform = transform_for(cfgs[0], torch.device("cpu"), ds)
    alone = [copy.deepcopy(m) for m in models]
    expected = [train(m, images[mb.train_idx], labels[mb.train_idx], c, task="classification",
                      x_val=images[mb.val_idx], y_val=labels[mb.val_idx], transform=transform, progress=False)
                for m, mb, c in zip(alone, members, per_model)]
    got = train_stacked_classifiers(models, images, labels, members, per_model, transform=transform)
    assert sum(r.stop_reason.startswith("early stop") for r in got) == 2  # patience=1 stops two folds early
    for a, b, ma, mb in zip(expected, got, alone, models):
        assert (len(b.history), b.stop_reason, b.best_epoch) == (len(a.history), a.stop_reason, a.best_epoch)
        for (name, p), q in zip(ma.state_dict().items(), mb.state_dict().values()):
            torch.testing.assert_close(q, p, rtol=0, atol=WEIGHT_ATOL, msg=name)
        for ra, rb in zip(a.history, b.history):
            assert set(ra) == set(rb)
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=LOSS_REL)
            assert rb["train_acc"] == pytest.approx(ra["train_acc"], abs=2.01 / 206)
            assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=VAL_LOSS_REL)
            assert rb["val_acc"] == pytest.approx(ra["val_acc"], abs=ACC_ABS)
            assert rb["lr"] == pytest.approx(ra["lr"], rel=1e-12)


def test_stacked_cv_of_the_cnn_preset_equals_one_by_one(fashion):
    cfgs = configs([{"lr": 0.003}, {"lr": 0.001, "weight_decay": 1e-2}], epochs=2)
    assert stack_key(cfgs[0]) == stack_key(cfgs[1]) is not None  # flips and shifts stack
    ds = load_dataset(cfgs[0], fashion)
    stacked = cross_validate_stacked_classifiers(cfgs, ds, folds=3)
    for cfg, folds in zip(cfgs, stacked):
        for s, a in zip(folds, cross_validate_classifier(cfg, ds, 3)):
            assert (s["epochs"], s["stop_reason"]) == (a["epochs"], a["stop_reason"])
            assert s["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=ACC_ABS)
            assert s["val_loss"] == pytest.approx(a["val_loss"], rel=VAL_LOSS_REL)


def test_a_diverging_cnn_stops_alone(fashion):
    cfgs = configs([{"lr": 0.01}, {"lr": 1e6}], epochs=2, optimizer="sgd", momentum=0.0)
    ds = load_dataset(cfgs[0], fashion)
    stacked = cross_validate_stacked_classifiers(cfgs, ds, folds=3)
    assert not any(f["diverged"] for f in stacked[0]) and all(f["diverged"] for f in stacked[1])
    # At lr 1e6 the losses reach 1e10 in one step and rounding decides which column overflows first
    # (train_loss here, val_loss alone): the epoch, the flag and the kept weights agree, the column may not.
    for s, a in zip(stacked[1], cross_validate_classifier(cfgs[1], ds, 3)):
        assert (s["epochs"], s["diverged"]) == (a["epochs"], a["diverged"]) == (1, True)
        assert "at epoch 1; kept the weights of epoch 0" in s["stop_reason"]
    for s, a in zip(stacked[0], cross_validate_classifier(cfgs[0], ds, 3)):  # its neighbour did not disturb it
        assert s["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=ACC_ABS)
        assert s["val_loss"] == pytest.approx(a["val_loss"], rel=VAL_LOSS_REL)


def test_tune_cnn_batch_trials_never_ranks_a_diverged_trial(tmp_path, monkeypatch):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from nndl import cli

    space = tmp_path / "grid.toml"
    space.write_text('preset = "cnn"\n[fixed]\nepochs = 1\nsubset = 310\nbatch_size = 64\nchannels = [4, 8, 8]\n'
                     'optimizer = "sgd"\nmomentum = 0.0\nreference = "none"\n[grid]\nlr = [0.01, 1e6]\n')
    stacks = []
    real = classify_task.cross_validate_stacked_classifiers
    monkeypatch.setattr(classify_task, "cross_validate_stacked_classifiers",
                        lambda cfgs, data, folds: stacks.append(len(cfgs)) or real(cfgs, data, folds))
    out = tmp_path / "tune"
    assert cli.main(["tune", "classify", "--space", str(space), "--folds", "3", "--out", str(out),
                     "--batch-trials", "2"]) == 0
    assert stacks == [2]  # both trials' six fold CNNs: one stack
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="classify-grid",
                              storage=JournalStorage(JournalFileBackend(str(out / "journal.log"))))
    states = {t.params["lr"]: t.state.name for t in study.trials}
    assert states == {0.01: "COMPLETE", 1e6: "FAIL"}
    assert study.best_trial.params["lr"] == 0.01


def test_unstackable_cnn_configs_are_refused_in_one_line(fashion):
    cfgs = configs([{"lr": 0.003}], epochs=1)
    ds = load_dataset(cfgs[0], fashion)
    images, labels, splits, models, members, per_model = build(cfgs, ds)
    for key, value, why in (("mixup", 0.2, "mixup/cutmix"), ("tta_flip", True, "test-time flip")):
        bad = [dataclasses.replace(c, **{key: value}) for c in per_model]
        with pytest.raises(NndlError, match=f"config key '{key}' = {value!r}: a CNN stack has no .*{why}"):
            train_stacked_classifiers(models, images, labels, members, bad, transform=None)
        assert stack_key(bad[0]) is None and classify_task.stack_blocker(bad[0]) == f"{key}={value!r}"
    resnet = config_mod.resolve("classify", "resnet", {}, 0)
    assert classify_task.stack_blocker(resnet).startswith("model=resnet (only the MLP and the cnn")
    from nndl.nn.models import ResNet

    with pytest.raises(NndlError, match="takes MLPs .* or CNNs .*model 1 is a ResNet \\(its ResidualBlock"):
        train_stacked_classifiers([ResNet((4, 8, 8))], images, labels, members[:1], per_model[:1])
    wider = configs([{"lr": 0.003, "channels": [4, 8, 16]}], epochs=1)[0]
    torch.manual_seed(0)
    other = classifier_on(wider, torch.device("cpu"), ds)
    with pytest.raises(NndlError, match="one shape: model 2 is SmallCNN"):
        train_stacked_classifiers([models[0], other], images, labels, members[:2], [per_model[0], wider])
