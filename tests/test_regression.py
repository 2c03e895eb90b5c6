import json
import math

import numpy as np
import pytest
import torch

import nndl
from nndl.base import config
from nndl.data.regression_table import bundled_path
from nndl.training.crossval import cross_validate
from nndl.training.stacked import train_stacked
from nndl.data.splits import kfold_indices
from nndl.nn.models import MLP, StackedMLP
from nndl.runfolder.files import load_model_file, read_history_csv
from nndl.tasks.regress.task import load_data, make_model_factory
from nndl.training.trainer import lr_factor, train

from conftest import ROOT, run_cli

QUIET = dict(progress=False, echo=lambda s: None)


def test_kfold_partitions_and_shuffles():
    splits = kfold_indices(103, 5, seed=1)
    vals = torch.cat([va for _, va in splits])
    assert sorted(vals.tolist()) == list(range(103))  # every row validated exactly once
    for tr, va in splits:
        assert set(tr.tolist()).isdisjoint(va.tolist()) and len(tr) + len(va) == 103
        assert max(len(v) for _, v in splits) - min(len(v) for _, v in splits) <= 1
    # shuffled: fold 1 is not a contiguous block of sorted rows
    first = splits[0][1]
    assert (first.max() - first.min()).item() > 2 * len(first)
    assert not torch.equal(first, kfold_indices(103, 5, seed=2)[0][1])
    assert torch.equal(first, kfold_indices(103, 5, seed=1)[0][1])


def test_lr_schedules():
    assert lr_factor(0, 100, 0, "constant") == 1.0
    assert lr_factor(4, 100, 10, "cosine") == pytest.approx(0.5)  # warm-up is linear
    assert lr_factor(99, 100, 0, "cosine") == pytest.approx(0.0, abs=1e-3)
    assert lr_factor(99, 100, 0, "linear", min_factor=0.1) == pytest.approx(0.1, abs=1e-2)
    peak = max(range(100), key=lambda s: lr_factor(s, 100, 0, "onecycle"))
    assert 20 <= peak <= 30


def test_stacked_gradients_equal_autograd_per_model():
    torch.manual_seed(0)
    models = [MLP(2, [8, 4], 1, "tanh") for _ in range(3)]
    stack = StackedMLP(models)
    x, y = torch.randn(10, 2), torch.randn(10)
    per_model = ((stack(x).squeeze(-1) - y) ** 2).mean(1)
    per_model.sum().backward()
    for k, m in enumerate(models):
        ((m(x).squeeze(-1) - y) ** 2).mean().backward()
        for i, layer in enumerate(m.layers):
            torch.testing.assert_close(stack.weights[i].grad[k], layer.weight.grad.T)
            torch.testing.assert_close(stack.biases[i].grad[k, 0], layer.bias.grad)


@pytest.mark.parametrize("overrides", [{"epochs": 60}, {"epochs": 40, "patience": 5, "optimizer": "sgd",
                                                         "nesterov": True, "l1": 1e-4, "schedule": "cosine"}])
def test_batched_folds_equal_sequential(overrides):
    cfg = config.resolve("regress", "seed", overrides)
    d = load_data(cfg)[0]
    x = torch.as_tensor(d.x)
    y = torch.as_tensor(d.y)
    factory = make_model_factory(cfg, x, y)
    seq = cross_validate(factory, x, y, cfg, batched=False, progress=False)
    bat = cross_validate(factory, x, y, cfg, batched=True, progress=False)
    for a, b in zip(seq, bat):
        assert a.result.best_epoch == b.result.best_epoch
        assert len(a.result.history) == len(b.result.history)
        assert a.val_mse == pytest.approx(b.val_mse, rel=1e-3)
        assert a.train_mse == pytest.approx(b.train_mse, rel=1e-3)


def test_learns_bundled_data_and_is_reproducible(tmp_path):
    m1 = nndl.regress(out=tmp_path / "a", **QUIET)
    y_test = np.loadtxt(bundled_path("regression_test.csv"), delimiter=",", skiprows=1)[:, 1]
    assert m1["test_mse"] < 0.3 * y_test.var()  # far better than predicting the mean
    assert m1["val_mse"] < 0.6 and m1["train_mse"] < m1["val_mse"] + 0.1
    m2 = nndl.regress(out=tmp_path / "b", **QUIET)
    for key in ("train_mse", "val_mse", "val_mse_std", "test_mse"):
        assert m1[key] == m2[key]
    m3 = nndl.regress(out=tmp_path / "c", seed=1, **QUIET)
    assert m3["val_mse"] != m1["val_mse"]


def test_ensemble_final_and_multicolumn(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (120, 2))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1]
    for name, rows in (("train.csv", slice(0, 100)), ("test.csv", slice(100, 120))):
        np.savetxt(tmp_path / name, np.c_[x[rows], y[rows]], delimiter=",", header="a,b,t", comments="")
    m = nndl.regress(train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"),
                     overrides={"final": "ensemble", "epochs": 300, "folds": 3, "activation": "tanh",
                                "hidden": [32]}, out=tmp_path / "run", **QUIET)
    assert m["test_mse"] < 0.2 * y.var()
    payload = load_model_file(tmp_path / "run")
    assert len(payload["state_dicts"]) == 3 and payload["x_names"] == ["a", "b"]


def test_nan_stops_with_reason_and_keeps_finite_weights():
    cfg = config.resolve("regress", "seed", {"lr": 1e8, "optimizer": "sgd", "momentum": 0.0, "epochs": 50,
                                             "activation": "relu"})
    torch.manual_seed(0)
    model = MLP(1, [16], 1, "relu")
    x = torch.linspace(-5, 5, 50)[:, None]
    res = train(model, x, x[:, 0] ** 2 * 100, cfg, task="regression", progress=False)
    assert res.diverged and "epoch" in res.stop_reason and "learning rate" in res.stop_reason
    assert len(res.history) < 50
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_in_search_space_reported_in_metrics(tmp_path):
    m = nndl.regress(out=tmp_path / "r", overrides={"lr": 1e9, "optimizer": "sgd", "momentum": 0.0, "epochs": 30,
                                                    "activation": "relu"}, **QUIET)
    assert m["diverged"] is True and any("learning rate" in r for r in m["stop_reasons"])
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["diverged"] is True


def test_early_stopping_restores_best():
    cfg = config.resolve("regress", "seed", {"epochs": 400, "patience": 10, "lr": 0.05})
    torch.manual_seed(0)
    x = torch.linspace(-3, 3, 40)[:, None]
    y = torch.sin(x[:, 0]) + 0.3 * torch.randn(40)
    model = MLP(1, [64, 64], 1, "relu")
    res = train(model, x[::2], y[::2], cfg, task="regression", x_val=x[1::2], y_val=y[1::2], progress=False)
    assert res.stop_reason.startswith("early stop")
    best_val = min(r["val_loss"] for r in res.history)
    assert res.best_metric == best_val
    final_val = ((model(x[1::2]).squeeze(-1) - y[1::2]) ** 2).mean().item()
    assert final_val == pytest.approx(best_val, rel=1e-5)


def test_cli_round_trip_writes_every_artefact(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("regress", "--out", out, "--set", "epochs=50", "--seed", "3", "--no-progress", check=0)
    assert "test_mse" in proc.stdout and "resolved config" in proc.stdout
    for name in ("config.json", "metrics.json", "history.csv", "model.pt", "environment.json",
                 "figures/losses.png", "figures/fit.png", "figures/weight_histograms.png", "figures/activations.png"):
        assert (out / name).stat().st_size > 0, name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["epochs"] == 50 and cfg["seed"] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"train_mse", "val_mse", "val_mse_std", "test_mse", "folds"} <= set(metrics)
    rows = read_history_csv(out / "history.csv")
    assert len(rows) == 5 * 50 + 50 and rows[0]["fold"] == "1" and rows[-1]["fold"] == "refit"
    payload = load_model_file(out / "model.pt")
    assert payload["task"] == "regress" and payload["config"]["epochs"] == 50
    # the folder is never replaced silently
    again = run_cli("regress", "--out", out, "--set", "epochs=5", "--no-progress")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert json.loads((out / "config.json").read_text())["epochs"] == 50
    run_cli("regress", "--out", out, "--set", "epochs=5", "--overwrite", "--no-progress", "--no-figures", check=0)
    assert json.loads((out / "config.json").read_text())["epochs"] == 5


def test_cli_help_and_bad_set():
    assert "--x-cols" in run_cli("regress", "--help", check=0).stdout
    proc = run_cli("regress", "--set", "hiden=3", "--no-progress")
    assert proc.returncode == 2 and "did you mean hidden" in proc.stderr and "Traceback" not in proc.stderr


def test_batched_diverged_fold_keeps_finite_weights_and_spares_the_others():
    cfg = config.resolve("regress", "seed", {"epochs": 30, "optimizer": "sgd", "momentum": 0.0, "lr": 1e-3,
                                             "activation": "relu", "hidden": [16]})
    x = torch.linspace(-5, 5, 50)[:, None]
    y = x[:, 0] ** 2
    torch.manual_seed(0)
    models = [MLP(1, [16], 1, "relu") for _ in range(5)]
    with torch.no_grad():  # only model 0 starts with huge weights, so only it blows up
        for p in models[0].parameters():
            p.mul_(1e6)
    results = train_stacked(models, x, y, kfold_indices(50, 5, 0), cfg, progress=False)
    assert results[0].diverged
    assert not any(r.diverged for r in results[1:])
    for m in models:
        assert all(torch.isfinite(p).all() for p in m.parameters())
