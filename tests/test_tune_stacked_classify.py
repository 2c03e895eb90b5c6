"""``nndl tune classify --batch-trials``: MLP trials' folds trained as one stack equal one-by-one CV.

The reference is the classification task's own one-by-one cross-validation
(:func:`cross_validate_classifier`: stratified K-fold, the dataset's normalisation transform, one
:func:`nndl.training.trainer.train` per fold). With the same seeds the stacked fold models start
from the same weights and see the same batches; they differ only by float rounding of batched
matmuls. Tolerance: fold accuracies within 1e-6 (measured: identical on wine and digits), fold
validation losses within 1e-5 relative (measured: at most 5e-7 on wine, 3e-6 on digits).
The tolerance holds for well-conditioned training like these configs: at a large Adam lr (0.03-0.1 on
digits, 20 epochs) the rounding differences grow epoch by epoch until fold accuracies differ by points,
and the one-by-one path itself moves as much between 1 and 2 torch threads.
The data are scikit-learn's wine table (178 rows, 13 features, 3 classes) written as a CSV.
"""
import csv
import sys
from pathlib import Path

import optuna
import pytest

from nndl import cli
from nndl.base import config as config_mod
from nndl.base.errors import NndlError
from nndl.tasks.classify import task as classify_task
from nndl.tasks.classify.task import (TASK, cross_validate_classifier, cross_validate_stacked_classifiers,
                                      load_dataset, stack_key)

sys.path.insert(0, str(Path(__file__).parent))
from test_golden import write_wine_csv  # noqa: E402

ACC_ABS, LOSS_REL = 1e-6, 1e-5
BASE = {"epochs": 6, "batch_size": 32, "hidden": [32, 16], "dropout": [0.2, 0.0], "reference": "none"}
GRID = [{"lr": 0.01},
        {"lr": 0.003, "weight_decay": 1e-3, "label_smoothing": 0.1},
        {"lr": 0.03, "patience": 1, "schedule": "cosine", "optimizer": "adam"}]


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    return write_wine_csv(tmp_path_factory.mktemp("wine") / "wine.csv")


def configs(wine, grid, **extra):
    return [config_mod.resolve("classify", "mlp", {**BASE, "data": str(wine), **extra, **g}, 0) for g in grid]


def assert_same_folds(stacked, alone):
    assert len(stacked) == len(alone)
    for s, a in zip(stacked, alone):
        assert s["epochs"] == a["epochs"] and s["stop_reason"] == a["stop_reason"]
        assert s["diverged"] == a["diverged"] and s["timed_out"] == a["timed_out"]
        assert s["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=ACC_ABS)
        assert s["val_loss"] == pytest.approx(a["val_loss"], rel=LOSS_REL)


def test_stacked_folds_equal_one_by_one(wine):
    cfgs = configs(wine, GRID)
    ds = load_dataset(cfgs[0])
    stacked = cross_validate_stacked_classifiers(cfgs, ds, folds=3)
    assert [len(s) for s in stacked] == [3, 3, 3]
    for cfg, folds in zip(cfgs, stacked):
        assert_same_folds(folds, cross_validate_classifier(cfg, ds, 3))
    assert all(f["stop_reason"].startswith("early stop") for f in stacked[2])  # patience=1 stops it alone
    assert all(f["epochs"] == 6 for f in stacked[0] + stacked[1])  # while its neighbours train on
    assert min(f["val_accuracy"] for f in stacked[0]) > 0.8  # they learn (chance is 0.4)


def test_unstackable_configs_fall_back_to_one_by_one(wine, monkeypatch):
    mlps = configs(wine, GRID[:2])
    noisy = configs(wine, [{"lr": 0.01}], noise=0.1)[0]  # augmentation: draws per batch, never stacked
    wider = configs(wine, [{"lr": 0.01}], hidden=[64, 16])[0]  # another network: a stack of its own
    cnn = config_mod.resolve("classify", "resnet", {}, 0)  # residual blocks: no grouped stack
    assert stack_key(noisy) is None and stack_key(cnn) is None and stack_key(mlps[0]) == stack_key(mlps[1])
    assert stack_key(wider) is not None and stack_key(wider) != stack_key(mlps[0])
    assert classify_task.stack_blocker(noisy) == "noise=0.1"
    stacks = []
    real = classify_task.cross_validate_stacked_classifiers
    monkeypatch.setattr(classify_task, "cross_validate_stacked_classifiers",
                        lambda cfgs, data, folds: stacks.append(cfgs) or real(cfgs, data, folds))
    cfgs = [mlps[0], noisy, wider, mlps[1]]
    ds = load_dataset(cfgs[0])
    got = TASK.cross_validate_stacked(cfgs, ds, folds=3)
    assert stacks == [[mlps[0], mlps[1]], [wider]]  # the noisy config trained one by one
    for cfg, folds in zip(cfgs, got):
        alone = TASK.cross_validate(cfg, ds, 3)
        if cfg is noisy:
            timeless = lambda fs: [{k: v for k, v in f.items() if k != "train_seconds"} for f in fs]  # noqa: E731
            assert timeless(folds) == timeless(alone)  # the very same one-by-one path: equal numbers
        else:
            assert [f["score"] for f in folds] == [f["val_accuracy"] for f in folds]
            assert_same_folds(folds, alone)


def test_a_stack_refuses_configs_of_two_networks(wine):
    cfgs = configs(wine, [{"lr": 0.01}, {"lr": 0.01, "noise": 0.1}])
    with pytest.raises(NndlError, match="noise=0.1 does not stack"):
        cross_validate_stacked_classifiers(cfgs, load_dataset(cfgs[0]))


def _trials(folder: Path) -> dict:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="classify-grid",
                              storage=JournalStorage(JournalFileBackend(str(folder / "journal.log"))))
    return {t.params["lr"]: (t.state.name, t.value, t.user_attrs.get("fold_values")) for t in study.trials}


def test_tune_classify_batch_trials_cli_round_trip(wine, tmp_path, capsys, monkeypatch):
    space = tmp_path / "grid.toml"
    space.write_text('preset = "mlp"\n[fixed]\nepochs = 6\nbatch_size = 32\nhidden = [32, 16]\nreference = "none"\n'
                     "[grid]\nlr = [0.003, 0.01, 0.03]\n")
    common = ["tune", "classify", "--space", str(space), "--folds", "3", "--set", f"data={wine}"]
    stacks = []
    real = classify_task.cross_validate_stacked_classifiers
    monkeypatch.setattr(classify_task, "cross_validate_stacked_classifiers",
                        lambda cfgs, data, folds: stacks.append(len(cfgs)) or real(cfgs, data, folds))
    assert cli.main([*common, "--out", str(tmp_path / "alone")]) == 0
    assert stacks == []  # without --batch-trials a trial trains fold by fold (a pruner may stop it)
    assert cli.main([*common, "--out", str(tmp_path / "stacked"), "--batch-trials", "3"]) == 0
    assert stacks == [3]  # the three trials' nine folds: one stack
    printed = capsys.readouterr().out
    assert "3 trials per stacked batch" in printed
    alone, stacked = _trials(tmp_path / "alone"), _trials(tmp_path / "stacked")
    assert set(alone) == set(stacked) == {0.003, 0.01, 0.03}
    for lr, (state, value, folds) in alone.items():
        assert state == stacked[lr][0] == "COMPLETE"
        assert stacked[lr][1] == pytest.approx(value, abs=ACC_ABS), lr
        assert stacked[lr][2] == pytest.approx(folds, abs=ACC_ABS), lr
    with open(tmp_path / "stacked" / "trials.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    assert (tmp_path / "stacked" / "best_preset.toml").is_file()
