"""The lr finder: a finite suggestion inside the swept range, where the loss falls fastest."""
import json
import math

import numpy as np
import pytest

import nndl
from conftest import FASHION_DIR, needs_fashion, run_cli
from nndl.data.regression_table import read_csv
from nndl.base.errors import NndlError
from nndl.tools.lr_find import steepest, suggest

QUIET = dict(echo=lambda s: None)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_suggestion_is_a_tenth_of_the_minimum_and_steepest_the_fastest_fall():
    lrs = np.logspace(-6, 0, 200)
    x = np.log10(lrs)
    losses = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 4))  # falls fastest at lr = 1e-3 ...
    losses = losses + np.where(x > -1, (x + 1) * 20, 0) - np.where(x <= -1, (x + 6) * 1e-3, 0)  # ... lowest at 0.1
    assert steepest(lrs, losses) == pytest.approx(1e-3, rel=0.2)
    assert suggest(lrs, losses) == pytest.approx(1e-2, rel=0.1)
    flat = np.full(5, 1.0)
    assert suggest(lrs[:5], flat) == lrs[0] and steepest(lrs[:5], flat) == lrs[0]  # no fall: the lowest lr
    assert suggest(lrs[:3], [np.nan, 1.0, np.inf]) == lrs[1]  # NaN/inf points ignored, never below the range


def test_regress_sweep_suggests_an_lr_that_trains(tmp_path):
    res = nndl.lr_find("regress", out=tmp_path / "lf", lr_min=1e-5, lr_max=1.0, **QUIET)
    assert math.isfinite(res.suggestion) and 1e-5 <= res.suggestion <= 1.0
    assert res.lrs[0] == pytest.approx(1e-5) and all(a < b for a, b in zip(res.lrs, res.lrs[1:]))
    at = int(np.argmin(np.abs(np.array(res.lrs) - res.suggestion)))
    assert res.losses[at] < res.losses[0]  # the loss is already falling there
    assert (tmp_path / "lf/lr_find.png").exists()
    saved = json.loads((tmp_path / "lf/lr_find.json").read_text())
    assert saved["suggestion"] == pytest.approx(res.suggestion) and len(saved["lrs"]) == len(res.lrs)
    run = nndl.regress(out=tmp_path / "r", overrides={"lr": res.suggestion, "epochs": 300, "folds": 2},
                       progress=False, figures=False, **QUIET)
    y_var = np.var(read_csv("bundled:regression_train.csv").y)
    assert run["val_mse"] < 0.5 * y_var  # the suggested lr learns


@needs_fashion
def test_classify_sweep_stops_when_the_loss_blows_up(tmp_path):
    res = nndl.lr_find("classify", overrides={"subset": 3000, "data": str(FASHION_DIR)}, lr_max=100.0,
                       out=tmp_path / "lf", **QUIET)
    assert "diverged" in res.stop_reason or "became" in res.stop_reason
    assert res.lrs[-1] < 100.0 and 1e-6 <= res.suggestion <= res.lrs[-1]
    assert 1e-4 <= res.suggestion <= 0.1  # Adam on an MLP: the usual range


def test_cli_prints_the_suggestion(tmp_path):
    proc = run_cli("lr-find", "regress", "--out", tmp_path / "lf", "--no-progress", check=0)
    assert "suggested lr:" in proc.stdout and (tmp_path / "lf/lr_find.png").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "cluster"}, "unknown task 'cluster'"),
    ({"lr_min": 1.0, "lr_max": 0.1}, "need 0 < lr_min < lr_max"),
    ({"fraction": 0.0}, "fraction must be in"),
])
def test_bad_settings_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(NndlError, match=message):
        nndl.lr_find(**{"task": "regress", **kwargs}, out=tmp_path / "lf", **QUIET)
    assert not (tmp_path / "lf").exists()
