import json
import re

import numpy as np
import pytest
import torch

import nndl
import nndl.tasks.classify.task as clf
from nndl.base import config
from nndl.nn.augment import make_transform, random_erase, random_flip, random_translate
from nndl.data.fashion import load_fashion
from nndl.runfolder.files import load_model_file, read_history_csv
from nndl.tasks.classify.config import ClassifyConfig
from nndl.training.trainer import TrainingInterrupted, evaluate

from conftest import needs_fashion, run_cli

QUIET = dict(progress=False, echo=lambda s: None)


@pytest.fixture(scope="module")
def fashion():
    return load_fashion()


def test_evaluate_matches_sklearn():
    from sklearn.metrics import accuracy_score, log_loss

    torch.manual_seed(0)
    logits = torch.randn(500, 10) * 3
    y = torch.randint(0, 10, (500,))
    model = torch.nn.Identity()
    ev = evaluate(model, logits, y, "classification", batch_size=128)
    probs = logits.double().softmax(1).numpy()
    assert ev["loss"] == pytest.approx(log_loss(y.numpy(), probs, labels=range(10)), rel=1e-5)
    assert ev["accuracy"] == pytest.approx(accuracy_score(y.numpy(), logits.argmax(1).numpy()))


def test_augmentations_are_batched_and_sane():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10, 5] = 1.0  # one bright pixel, left of centre
    flipped = random_flip(x, gen)
    moved = (flipped[:, 0, 10, 22] == 1).sum().item()
    assert 10 < moved < 54 and torch.equal(flipped.sum((1, 2, 3)), x.sum((1, 2, 3)))
    shifted = random_translate(x, 2, gen)
    assert shifted.shape == x.shape
    pos = shifted[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 28, pos % 28
    assert ((rows - 10).abs() <= 2).all() and ((cols - 5).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # per-image shifts, not one for the batch
    erased = random_erase(torch.ones(64, 1, 28, 28), 1.0, gen)
    frac = 1 - erased.mean((1, 2, 3))
    assert (frac > 0.005).all() and (frac < 0.35).all()
    t = make_transform(flip=True, translate=2)
    raw = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    assert torch.equal(t(raw, None), t(raw, None))  # evaluation: no randomness
    assert t(raw, None).shape == (8, 1, 28, 28)


@needs_fashion
def test_mlp_learns_on_a_real_subset(tmp_path, fashion):
    m = nndl.classify("mlp", {"subset": 4000, "epochs": 4, "test_subset": 2000}, out=tmp_path / "r", figures=False,
                      data=fashion, **QUIET)
    assert m["test_accuracy"] > 0.75  # chance is 0.10
    assert 0 <= m["val_accuracy"] <= 1 and set(m["per_class_accuracy"]) == set(fashion.class_names)


@needs_fashion
def test_cnn_learns_on_a_real_subset(tmp_path, fashion):
    m = nndl.classify("cnn", {"subset": 3000, "epochs": 2, "test_subset": 1000}, out=tmp_path / "r", figures=False,
                      data=fashion, **QUIET)
    assert m["test_accuracy"] > 0.65


@needs_fashion
@pytest.mark.parametrize("preset, more", [
    ("mlp", {"batch_size": 256}),  # set, so the step rule keeps 6 batches per epoch on these 1,350 rows
    # the lite CNN under bf16 autocast where the CPU has it (amp_cpu): resume is exact there too
    ("speed", {"batch_size": 256, "val_fraction": 0.1, "amp_cpu": True}),
])
def test_interrupt_and_resume_reach_the_same_metrics(tmp_path, fashion, monkeypatch, preset, more):
    overrides = {"subset": 1500, "epochs": 3, "test_subset": 500, "flip": True, "translate": 1, "erase": 0.2, **more}
    full = nndl.classify(preset, overrides, out=tmp_path / "full", figures=False, data=fashion, **QUIET)

    original = clf.transform_for
    calls = {"n": 0}

    def interrupting(cfg, device, dataset=None):
        inner = original(cfg, device, dataset)

        def transform(xb, gen):
            if gen is not None:
                calls["n"] += 1
                if calls["n"] == 8:  # mid-way through epoch 2 (6 batches per epoch)
                    raise KeyboardInterrupt
            return inner(xb, gen)
        return transform

    monkeypatch.setattr(clf, "transform_for", interrupting)
    with pytest.raises(TrainingInterrupted, match="checkpoint holds epoch 1"):
        nndl.classify(preset, overrides, out=tmp_path / "cut", figures=False, data=fashion, **QUIET)
    monkeypatch.setattr(clf, "transform_for", original)
    resumed = nndl.classify(resume=str(tmp_path / "cut"), figures=False, data=fashion, **QUIET)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert resumed["test_loss"] == full["test_loss"]
    a = read_history_csv(tmp_path / "full" / "history.csv")
    b = read_history_csv(tmp_path / "cut" / "history.csv")
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]


def test_resume_bad_folder(tmp_path):
    with pytest.raises(nndl.base.errors.NndlError, match="not an interrupted nndl run"):
        nndl.classify(resume=str(tmp_path), **QUIET)


@needs_fashion
def test_nan_stop_reports_reason(tmp_path, fashion):
    m = nndl.classify("mlp", {"subset": 1000, "epochs": 3, "lr": 1e5, "optimizer": "sgd", "test_subset": 200},
                      out=tmp_path / "r", figures=False, data=fashion, **QUIET)
    assert m["diverged"] and "learning rate" in m["stop_reason"]
    assert np.isfinite(m["test_loss"])  # the last finite weights were kept


@needs_fashion
def test_cli_round_trip_writes_every_figure(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("classify", "--model", "cnn", "--set", "subset=800", "--set", "epochs=1", "--set", "test_subset=300",
                   "--out", out, "--seed", "1", check=0)
    assert "test_accuracy" in proc.stdout
    for name in ("config.json", "metrics.json", "history.csv", "model.pt", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"losses.png", "confusion_matrix.png", "misclassified.png", "first_layer.png", "feature_maps.png",
            "activation_max.png", "weight_histograms.png"} <= figures
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_accuracy", "val_accuracy", "test_loss", "per_class_accuracy", "train_seconds", "epochs"} <= set(metrics)
    assert json.loads((out / "config.json").read_text())["model"] == "cnn"
    assert load_model_file(out)["class_names"][0] == "T-shirt/top"


def test_cli_missing_dataset_is_one_line(tmp_path):
    proc = run_cli("classify", "--data", tmp_path / "nowhere", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_presets_resolve_to_reference_designs():
    mlp = config.resolve("classify", "mlp")
    assert (mlp.hidden, mlp.dropout, mlp.optimizer, mlp.lr, mlp.batch_size) == ([256, 128, 64], [0.2, 0.1, 0.1],
                                                                                   "adam", 1e-3, 256)
    model = nndl.nn.models.build_classifier(config.resolve("classify", "cnn"))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(16, (5, 5)), (32, (3, 3)), (64, (3, 3))]
    assert model.head.in_features == 1600


def _iris_table(path):
    from sklearn.datasets import load_iris

    d = load_iris()
    rows = [",".join(f"{v:g}" for v in row) + f",{d.target_names[t]}" for row, t in zip(d.data, d.target)]
    path.write_text("a,b,c,d,label\n" + "\n".join(rows) + "\n")
    return path


def test_without_a_validation_split_val_accuracy_is_missing_not_a_loss(tmp_path):
    """val_fraction=0: no epoch is validated, so val_accuracy is NaN (null in metrics.json, "–" in the
    report), never the train loss or any other number."""
    data = _iris_table(tmp_path / "iris.csv")
    run = nndl.classify("mlp", {"data": str(data), "val_fraction": 0.0, "epochs": 3, "hidden": [8],
                                "dropout": [0.0]}, out=tmp_path / "run", figures=False, **QUIET)
    assert np.isnan(run["val_accuracy"])
    assert json.loads((tmp_path / "run/metrics.json").read_text())["val_accuracy"] is None
    assert all("val_acc" not in row for row in read_history_csv(tmp_path / "run/history.csv"))
    report = (tmp_path / "run/report.html").read_text()
    assert re.search(r'Validation accuracy</div><div class="value">–</div>', report)


def test_early_stopping_needs_a_validation_split(tmp_path):
    data = _iris_table(tmp_path / "iris.csv")
    for preset, overrides in (("mlp", {"val_fraction": 0.0, "patience": 3}), ("fast", {"patience": 2})):
        with pytest.raises(nndl.base.errors.NndlError, match="'patience' = .*needs a validation split.*val_fraction > 0"):
            nndl.classify(preset, {"data": str(data), **overrides}, out=tmp_path / "run", **QUIET)
    assert not (tmp_path / "run").exists()


def test_val_accuracy_is_that_of_the_kept_epoch():
    """With early stopping the best epoch's row; else the last row; NaN for an unvalidated row."""
    from nndl.training.trainer import TrainResult

    rows = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.9}, {"epoch": 3, "val_acc": 0.7}]
    result = TrainResult(history=rows, best_epoch=2, best_metric=0.123)  # best_metric of another monitor
    assert clf.kept_val_accuracy(ClassifyConfig(patience=1), result) == 0.9
    assert clf.kept_val_accuracy(ClassifyConfig(), result) == 0.7
    assert np.isnan(clf.kept_val_accuracy(ClassifyConfig(), TrainResult(history=[{"epoch": 1}])))
    assert np.isnan(clf.kept_val_accuracy(ClassifyConfig(), TrainResult()))
