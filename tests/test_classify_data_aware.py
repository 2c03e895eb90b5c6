"""Classification that fits its data: mirror flips only where they keep the classes, a reference model
in every run, and the metrics users expect (macro-F1, balanced accuracy, log loss, ECE, reliability diagram).

Real small data: scikit-learn's digits as a PNG folder and wine as a CSV table, a few epochs each.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.metrics import log_loss as sk_log_loss

import nndl
from conftest import FASHION_DIR, needs_fashion, run_cli
from nndl.base import config as config_mod
from nndl.tasks.classify.task import fit_to_data, read_dataset
from nndl.base.errors import NndlError
from nndl.nn.metrics import classification_metrics, expected_calibration_error
from test_golden import write_digits_folder, write_wine_csv

QUIET = {"progress": False, "figures": False}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits_folder(tmp_path_factory.mktemp("data") / "digits", per_class=30)


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    return write_wine_csv(tmp_path_factory.mktemp("data") / "wine.csv")


def _run(data, preset=None, out=None, lines=None, figures=False, **overrides):
    overrides = {"data": str(data), "epochs": 2, **overrides}
    return nndl.classify(preset=preset, overrides=overrides, out=str(out), progress=False, figures=figures,
                         echo=(lines.append if lines is not None else lambda s: None))


# ----------------------------------------------------------------------------- metrics vs references
def _probs(n=400, k=5, seed=0, sharp=3.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + sharp * np.eye(k)[labels] * rng.random((n, 1))
    p = np.exp(logits - logits.max(1, keepdims=True))
    return labels, p / p.sum(1, keepdims=True)


def plain_ece(labels, probs, bins=15):
    """ECE by a loop over the bins (lo, hi], as written in the papers."""
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for lo, hi in zip(np.linspace(0, 1, bins + 1)[:-1], np.linspace(0, 1, bins + 1)[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn_and_a_plain_ece(seed):
    labels, probs = _probs(seed=seed)
    labels[:3] = 4  # make sure every class occurs
    got = classification_metrics(labels, probs)
    pred = probs.argmax(1)
    assert got["test_macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"), abs=1e-12)
    assert got["test_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred), abs=1e-12)
    assert got["test_log_loss"] == pytest.approx(sk_log_loss(labels, probs, labels=range(5)), rel=1e-9)
    assert got["test_ece"] == pytest.approx(plain_ece(labels, probs), abs=1e-12)
    assert 0 < got["test_ece"] < 1


def test_metrics_with_a_class_missing_from_the_test_set_and_a_certain_mistake():
    labels, probs = _probs(n=200, k=4, seed=3)
    keep = labels != 2  # class 2 never occurs in the test labels but may be predicted
    labels, probs = labels[keep], probs[keep]
    probs[0] = np.eye(4)[(labels[0] + 1) % 4]  # probability 0 on the true class: finite, as scikit-learn's
    got = classification_metrics(labels, probs, prefix="")
    pred = probs.argmax(1)
    assert got["macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"), abs=1e-12)
    with pytest.warns(UserWarning):  # scikit-learn warns about the predicted class absent from y_true
        expected = balanced_accuracy_score(labels, pred)
    assert got["balanced_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert got["log_loss"] == pytest.approx(sk_log_loss(labels, probs, labels=range(4)), rel=1e-9)
    assert np.isfinite(got["log_loss"])


def test_ece_is_zero_when_confidence_equals_accuracy():
    # 10 predictions at confidence 0.8, 8 of them right: perfectly calibrated
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(labels, probs) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(np.ones(10, int), probs) == pytest.approx(0.8)  # all wrong at 0.8


# ----------------------------------------------------------------------------- mirror flips fit the data
def test_preset_flip_is_switched_off_on_a_digits_folder(digits, tmp_path):
    proc = run_cli("classify", "--data", digits, "--preset", "cnn", "--set", "image_size=16", "--set", "epochs=2",
                   "--out", tmp_path / "run", "--no-progress", check=0)
    said = [ln for ln in proc.stdout.splitlines() if "switched off" in ln]
    assert len(said) == 1 and said[0].startswith("flip of preset cnn switched off: ")
    assert "mirror_invariant=yes" in said[0]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["flip"] is False and saved["model"] == "cnn" and saved["schedule"] == "cosine"
    assert (tmp_path / "run" / "figures" / "calibration.png").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("test_macro_f1", "test_balanced_accuracy", "test_log_loss", "test_ece"):
        assert 0 <= metrics[key] < 10, key


def test_preset_flip_and_tta_flip_are_off_and_explicit_flips_kept(digits):
    ds = read_dataset(config_mod.resolve("classify", overrides={"data": str(digits)}))
    assert ds.mirror_invariant is False
    lines = []
    cfg = config_mod.resolve("classify", "wide")
    fitted = fit_to_data(cfg, ds, config_mod.preset_keys("classify", "wide"), "wide", lines.append)
    assert (fitted.flip, fitted.tta_flip, fitted.translate) == (False, False, 2)
    assert lines[0].startswith("flip and tta_flip of preset wide switched off: ")
    # the user's own flip is honoured, and said
    lines = []
    asked = config_mod.resolve("classify", "cnn", ["flip=true"])
    kept = fit_to_data(asked, ds, config_mod.preset_keys("classify", "cnn", ["flip=true"]), "cnn", lines.append)
    assert kept.flip is True and len(lines) == 1 and lines[0].startswith("flip on as asked, though")
    # declared mirror-invariant: the preset's flip stays, nothing said
    lines = []
    declared = config_mod.resolve("classify", "cnn", ["mirror_invariant=yes"])
    same = fit_to_data(declared, ds, config_mod.preset_keys("classify", "cnn", ["mirror_invariant=yes"]), "cnn",
                       lines.append)
    assert same.flip is True and not [ln for ln in lines if "flip" in ln]
    # a preset file is the user's own: its flip is explicit
    assert config_mod.preset_keys("classify", "my.toml", []) == set()


def test_an_idx_folder_is_not_mirror_invariant_unless_declared(tmp_path):
    from sklearn.datasets import load_digits

    from test_datasets import write_idx

    d = load_digits()
    images, labels = (d.images * 16).clip(0, 255).astype(np.uint8), d.target
    for split, part in (("train", slice(0, 200)), ("t10k", slice(200, 260))):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images[part])
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels[part])
    for given, flips in (([], False), (["mirror_invariant=yes"], True)):
        cfg = config_mod.resolve("classify", "cnn", [f"data={tmp_path}", *given])
        ds = read_dataset(cfg)
        assert ds.kind == "idx" and ds.mirror_invariant is False
        lines = []
        assert fit_to_data(cfg, ds, config_mod.preset_keys("classify", "cnn", given), "cnn", lines.append).flip is flips
        assert bool([ln for ln in lines if "switched off" in ln]) is not flips


@needs_fashion
def test_preset_flip_stays_on_for_fashion_mnist():
    ds = read_dataset(config_mod.resolve("classify", overrides={"data": str(FASHION_DIR)}))
    assert ds.kind == "fashion_mnist" and ds.mirror_invariant
    lines = []
    cfg = config_mod.resolve("classify", "cnn")
    assert fit_to_data(cfg, ds, config_mod.preset_keys("classify", "cnn"), "cnn", lines.append) is cfg
    assert not [ln for ln in lines if "flip" in ln]
    lines = []
    off = config_mod.resolve("classify", "cnn", ["mirror_invariant=no"])
    assert fit_to_data(off, ds, config_mod.preset_keys("classify", "cnn", ["mirror_invariant=no"]), "cnn",
                       lines.append).flip is False
    assert "mirror_invariant=no" in lines[0]


def test_a_preset_flip_on_a_table_is_switched_off_and_an_explicit_one_refused(wine, tmp_path):
    lines = []
    run = nndl.classify("fast", {"data": str(wine), "model": "mlp", "epochs": 2, "val_fraction": 0.1,
                                 "batch_size": 32}, out=str(tmp_path / "t"), echo=lines.append, **QUIET)
    assert [ln for ln in lines if "switched off" in ln] == \
        ["flip and tta_flip of preset fast switched off: table rows have nothing to mirror"]
    assert run.config["flip"] is False and run.config["tta_flip"] is False
    with pytest.raises(NndlError, match="flip works on images only"):
        _run(wine, out=tmp_path / "u", flip=True)
    assert not (tmp_path / "u").exists()


# ----------------------------------------------------------------------------- the reference model
def test_reference_on_digits_and_wine_learns_and_has_its_keys(digits, wine, tmp_path):
    on_digits = _run(digits, out=tmp_path / "d", image_size=16, model="mlp").metrics
    assert on_digits["reference_model"] == "LogisticRegression"
    assert on_digits["reference_test_accuracy"] > 0.85 and on_digits["reference_test_macro_f1"] > 0.85
    assert on_digits["reference_train_rows"] == on_digits["train_images"]  # the rows the network trained on
    on_wine = _run(wine, out=tmp_path / "w", reference="hgb").metrics
    assert on_wine["reference_model"] == "HistGradientBoostingClassifier"
    assert on_wine["reference_test_accuracy"] > 0.85
    none = _run(wine, out=tmp_path / "n", reference="none").metrics
    assert none["reference_model"] == "none" and "reference_test_accuracy" not in none


def test_reference_keys_are_in_metrics_json_and_the_printed_summary(wine, tmp_path):
    proc = run_cli("classify", "--data", wine, "--out", tmp_path / "c", "--set", "epochs=2", "--no-progress",
                   "--no-figures", check=0)
    saved = json.loads((tmp_path / "c" / "metrics.json").read_text())
    for key in ("reference_model", "reference_test_accuracy", "reference_test_macro_f1", "test_accuracy",
                "test_loss", "test_macro_f1", "test_balanced_accuracy", "test_log_loss", "test_ece"):
        assert key in saved, key
    assert "reference_test_accuracy" in proc.stdout and "LogisticRegression" in proc.stdout


def test_without_scikit_learn_a_default_run_says_so_once_and_an_explicit_reference_fails(wine, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    lines = []
    run = _run(wine, out=tmp_path / "a", lines=lines)
    printed = "\n".join(lines).splitlines()
    assert [ln for ln in printed if "skipped" in ln] == ["reference model skipped: pip install 'nndl[sklearn]'"]
    assert run.metrics["reference_model"] == "none"
    with pytest.raises(NndlError, match=r"^config key 'reference' = 'logistic' needs scikit-learn: pip install "
                                        r"'nndl\[sklearn\]'") as e:
        _run(wine, out=tmp_path / "b", reference="logistic")
    assert "\n" not in str(e.value) and not (tmp_path / "b").exists()


# ----------------------------------------------------------------------------- bad settings: one line
@pytest.mark.parametrize("overrides, message", [
    ({"reference": "forest"}, "config key 'reference' = 'forest': choose one of auto, logistic, hgb, none"),
    ({"mirror_invariant": "maybe"}, "config key 'mirror_invariant' = 'maybe': choose one of auto, yes, no"),
    ({"mirror_invariant": True}, "config key 'mirror_invariant': expected str"),
])
def test_bad_settings_are_one_line(overrides, message):
    with pytest.raises(NndlError) as e:
        config_mod.resolve("classify", None, overrides)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("data, overrides, message", [
    ("wine", {"mirror_invariant": "yes"}, "config key 'mirror_invariant' = 'yes' does not apply to csv_table data"),
    ("digits", {"reference": "hgb", "image_size": 16}, "config key 'reference' = 'hgb': gradient boosting is the "
                                                       "reference for tables"),
    ("digits", {"flip": True, "mirror_invariant": "no", "image_size": 16},
     "config key 'flip' = true: mirror_invariant=no says a mirrored image changes class"),
])
def test_settings_that_do_not_fit_the_data_are_one_line_before_a_run_folder(data, overrides, message, digits, wine,
                                                                            tmp_path):
    path = {"digits": digits, "wine": wine}[data]
    with pytest.raises(NndlError) as e:
        _run(path, out=tmp_path / "x", **overrides)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()


def test_cli_bad_reference_exits_2_with_one_line(wine, tmp_path):
    proc = run_cli("classify", "--data", wine, "--set", "reference=hgb2", "--out", tmp_path / "x", check=2)
    assert proc.stderr.strip().count("\n") == 0 and "reference" in proc.stderr


# ----------------------------------------------------------------------------- temperature scaling
@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_temperature_recovers_the_temperature_that_generated_the_labels(true_temperature):
    import torch

    from nndl.nn.calibration import fit_temperature

    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20000, 6, generator=gen)
    labels = torch.multinomial((logits / true_temperature).softmax(1), 1, generator=gen).ravel()
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)
    assert fit_temperature(logits / 100, labels) == 0.25  # bounded: never below 0.25


@pytest.mark.parametrize("model", ["mlp", "cnn", "fast", "lite", "resnet"])
def test_folding_the_temperature_divides_the_logits(model):
    import torch

    from nndl.nn.calibration import fold_temperature
    from nndl.nn.models import build_classifier

    cfg = config_mod.resolve("classify", overrides={"model": model})
    net = build_classifier(cfg, (1, 16, 16), 10).eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        before = net(x)
        fold_temperature(net, 0.4)
        assert torch.allclose(net(x), before / 0.4, rtol=1e-5, atol=1e-5)


def test_the_fast_model_is_calibrated_on_validation_and_predict_uses_it(digits, tmp_path):
    import torch

    from nndl.tools.predict import load_run

    # 15 short epochs: the net learns digits (~98%), but its fixed logit scale keeps it unsure
    run = _run(digits, out=tmp_path / "f", model="fast", image_size=16, epochs=15, batch_size=64).metrics
    assert run["test_accuracy"] > 0.9
    assert 0.25 <= run["temperature"] < 1  # the scaled logits were under-confident
    assert run["test_log_loss"] < run["test_log_loss_uncalibrated"]
    assert run["test_ece"] < run["test_ece_uncalibrated"]
    assert run["test_log_loss"] == pytest.approx(run["test_loss"], rel=1e-5)
    assert torch.load(tmp_path / "f" / "model.pt", weights_only=True)["temperature"] == run["temperature"]
    assert load_run(tmp_path / "f").model is not None  # the folded weights load as any model.pt
    plain = _run(digits, out=tmp_path / "p", model="fast", image_size=16, epochs=15, batch_size=64,
                 calibrate="none").metrics
    assert "temperature" not in plain and plain["test_accuracy"] == run["test_accuracy"]
    assert plain["test_log_loss"] == pytest.approx(run["test_log_loss_uncalibrated"], rel=1e-5)
    mlp = _run(digits, out=tmp_path / "m", image_size=16).metrics
    assert "temperature" not in mlp  # auto: only models with scaled logits


def test_calibrate_without_a_validation_split_is_one_line():
    with pytest.raises(NndlError, match=r"^config key 'calibrate' = 'temperature': fits the temperature on the "
                                        r"validation split; set val_fraction > 0"):
        config_mod.resolve("classify", None, {"calibrate": "temperature", "val_fraction": 0})
