"""Regression on a table of several input columns: the split and the scaling a run chooses (issue 21, item 2).

A built-in preset's blocked split sorts along one column, so on several inputs it becomes a
shuffled K-fold with a line saying so (or blocks along ``block_col``); inputs and target are
standardised unless the user said otherwise; what the user set is never changed, and a blocked
split of several inputs without a column to sort along is refused in one line.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nndl import cli
from nndl.base import config
from nndl.data.splits import make_splits
from nndl.tasks.regress.task import TABLE_RECIPE, TABLE_SEARCH_PATIENCE, fit_to_data, load_groups, regress

from test_bad_inputs import assert_one_line_error

QUIET = ["--no-progress", "--no-figures", "--no-reference"]


@pytest.fixture
def table(tmp_path, monkeypatch):
    """60 rows: a time column t, two inputs on very different scales, and a target."""
    rng = np.random.default_rng(0)
    t = rng.permutation(60).astype(float)
    a, b = rng.normal(0, 1, 60), rng.normal(0, 1000, 60)
    y = np.sin(a) + b / 1000 + rng.normal(0, 0.1, 60)
    (tmp_path / "tab.csv").write_text("t,a,b,y\n" + "".join(f"{p:g},{q:.4f},{r:.2f},{v:.4f}\n"
                                                          for p, q, r, v in zip(t, a, b, y)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cfg(preset=None, **overrides):
    overrides = {"train_path": "tab.csv", "test_path": "", **overrides}
    cfg = config.resolve("regress", preset, overrides)
    lines: list[str] = []
    return fit_to_data(cfg, config.user_keys(preset, overrides), preset, lines.append), lines


def test_auto_on_several_inputs_switches_to_shuffled_kfold_stops_early_and_standardises(table):
    cfg, lines = _cfg("auto")
    assert cfg.splitter == "kfold" and cfg.standardize and cfg.patience == TABLE_SEARCH_PATIENCE
    assert lines == ["splitter=blocked of preset auto switched to kfold: 3 input columns and no block_col to sort "
                     "along (--set block_col=COL blocks along one)",
                     "search=auto on 3 input columns: each fold model stops early (patience 50; --set patience=0 "
                     "trains every epoch)"]


def test_the_default_on_several_inputs_is_the_table_recipe_and_says_so(table):
    cfg, lines = _cfg()
    assert cfg.standardize and cfg.splitter == "kfold"
    assert {key: getattr(cfg, key) for key in TABLE_RECIPE} == TABLE_RECIPE
    assert lines == ["default recipe for 3 input columns: gelu 64-64, weight decay 1e-2, early stopping (patience 50) "
                     "on each fold, the fold models' average (--preset seed keeps the notebook's net)",
                     "standardize on: 3 input columns (--set standardize=false keeps raw scales)"]


def test_a_named_preset_keeps_its_net_on_several_inputs(table):
    seed, _ = _cfg("seed")
    plain = config.resolve("regress", "seed", {"train_path": "tab.csv", "test_path": ""})
    assert (seed.hidden, seed.activation, seed.lr, seed.epochs, seed.patience, seed.final) == (
        plain.hidden, plain.activation, plain.lr, plain.epochs, plain.patience, plain.final)
    assert seed.standardize  # several scales still get standardised


def test_what_the_user_set_is_kept(table):
    cfg, lines = _cfg(None, standardize=False, hidden=[16], patience=0, final="refit")
    assert not cfg.standardize and cfg.hidden == [16] and cfg.patience == 0 and cfg.final == "refit"
    assert cfg.activation == "gelu" and cfg.weight_decay == 1e-2  # the rest of the recipe still applies
    assert len(lines) == 1 and lines[0].startswith("default recipe for 3 input columns")
    cfg, lines = _cfg("auto", block_col="t", patience=0)
    assert cfg.splitter == "blocked" and cfg.block_col == "t" and cfg.patience == 0 and lines == []


def test_the_table_recipe_beats_the_notebook_net_on_diabetes(tmp_path):
    """Learns above a threshold on small real data: scikit-learn's diabetes table (331/111 rows)."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = load_diabetes()
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.25, random_state=0)
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        (tmp_path / f"{name}.csv").write_text(",".join([*d.feature_names, "target"]) + "\n" + "".join(
            ",".join(f"{v:.6g}" for v in row) + f",{t:g}\n" for row, t in zip(x, y)))
    run = regress(train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"), seed=0,
                  overrides={"y_col": "target", "reference": "none"}, out=str(tmp_path / "run"),
                  progress=False, figures=False, echo=None, verbose=False)
    ridge = r2_score(yte, make_pipeline(StandardScaler(), Ridge()).fit(xtr, ytr).predict(xte))
    # the notebook's net scored R^2 -0.27 here; ridge 0.36; the recipe 0.37 (3 seeds 0.364-0.377)
    assert run.metrics["test_r2"] > ridge - 0.03, (run.metrics["test_r2"], ridge)


def test_one_input_column_is_left_as_the_preset_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one.csv").write_text("x,y\n" + "".join(f"{i},{i * i}\n" for i in range(20)))
    overrides = {"train_path": "one.csv", "test_path": ""}
    for preset in (None, "auto"):
        cfg = config.resolve("regress", preset, overrides)
        assert fit_to_data(cfg, config.user_keys(preset, overrides), preset, print) == cfg


def test_blocked_folds_are_contiguous_along_the_block_column(table):
    cfg, _ = _cfg(None, splitter="blocked", block_col="t")
    values = load_groups(cfg)
    x = torch.zeros(60, 3)  # the folds must not depend on the inputs' order
    for _, val in make_splits(x, cfg, values):
        held = np.sort(values[val.numpy()])
        assert np.all(np.diff(held) == 1)  # t is a permutation of 0..59: a block is a run of consecutive times


def test_a_blocked_run_along_a_named_column_records_it(table):
    run = regress("tab.csv", "", overrides={"splitter": "blocked", "block_col": "t", "epochs": 5, "hidden": [4],
                                            "reference": "none"},
                  out="blk", progress=False, figures=False, echo=None, verbose=False)
    assert run.metrics["splitter"] == "blocked"
    assert json.loads((table / "blk/config.json").read_text())["block_col"] == "t"


@pytest.mark.parametrize("args,expected", [
    (["--set", "splitter=blocked"], "tab.csv has 3 input columns; name the one to block along (--set block_col=COL"),
    (["--set", "splitter=blocked", "--set", "block_col=when"], "no column named 'when' for block_col"),
    (["--set", "block_col=t"], "config key 'block_col' = 't' does not apply: only splitter=blocked sorts along a column"),
    (["--preset", "auto", "--set", "splitter=blocked"], "name the one to block along"),
])
def test_bad_block_settings_are_one_line(table, capsys, args, expected):
    code = cli.main(["regress", "--train", "tab.csv", "--test", "", *QUIET, "--set", "epochs=2", *args])
    assert_one_line_error(code, capsys.readouterr().err, expected)
    assert not (table / "runs").exists()


# ----------------------------------------------------------------------------- the advice when the reference wins
@pytest.mark.parametrize("metrics, advised", [
    ({"reference_model": "ridge", "reference_val_mse": 2999.0, "val_mse": 4419.0}, True),
    ({"reference_model": "ridge", "reference_val_mse": 0.305, "val_mse": 0.337}, False),  # within fold noise
    ({"reference_model": "gp", "reference_val_mse": 0.5, "val_mse": 0.4}, False),        # the net wins
    ({"reference_model": "ridge", "reference_val_mse": 1.0, "val_mse": 9.0, "search": "auto"}, False),
    ({"reference_model": "ridge", "reference_val_mse": float("nan"), "val_mse": 9.0}, False),
    ({"val_mse": 9.0}, False),                                                            # no reference
])
def test_the_advice_is_judged_on_the_cv_folds(metrics, advised):
    from nndl.tasks.regress.reference import advice_line

    line = advice_line(metrics)
    assert (line is not None) is advised
    if advised:
        assert line == ("the reference ridge beats the net on the same CV folds (val MSE 2999 vs 4419): try "
                        "--preset auto, a search over smaller, regularised nets")


def test_diabetes_seed_run_prints_the_advice(tmp_path, capsys):
    """scikit-learn's diabetes (10 columns): the seed network overfits 331 rows, ridge wins on the folds."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    header = ",".join([*d.feature_names, "target"])
    (tmp_path / "d.csv").write_text(header + "\n" + "".join(",".join(f"{v:.6g}" for v in [*row, t]) + "\n"
                                                            for row, t in zip(d.data[:331], d.target[:331])))
    assert cli.main(["regress", "--train", str(tmp_path / "d.csv"), "--test", "", "--y-col", "target",
                     "--preset", "seed", "--out", str(tmp_path / "run"), "--no-progress", "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "the reference ridge beats the net on the same CV folds" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["reference_val_mse"] < 0.9 * metrics["val_mse"]
