"""interval=cv_plus: the CV+ maths against a brute-force reference, its coverage on exchangeable data,
a CLI round trip (metrics -> predict -> export) and bad input."""
import json
import math

import numpy as np
import pytest
import torch

from conftest import run_cli
from nndl.base.errors import NndlError
from nndl.nn import conformal


def brute_cv_plus(fold_preds, residuals, row_fold, level):
    """The definition, written out: sort the n candidate bounds at each point and pick the ranks."""
    n, alpha = len(residuals), 1 - level
    lo_rank, hi_rank = math.floor(alpha * (n + 1) + 1e-9), math.ceil((1 - alpha) * (n + 1) - 1e-9)
    lower, upper = [], []
    for j in range(fold_preds.shape[1]):
        lows = sorted(fold_preds[row_fold[i], j] - residuals[i] for i in range(n))
        highs = sorted(fold_preds[row_fold[i], j] + residuals[i] for i in range(n))
        lower.append(lows[lo_rank - 1])
        upper.append(highs[hi_rank - 1])
    return np.array(lower), np.array(upper)


@pytest.mark.parametrize("n,k,level", [(9, 3, 0.9), (19, 2, 0.9), (37, 5, 0.8), (50, 4, 0.95)])
def test_cv_plus_matches_brute_force(n, k, level):
    rng = np.random.default_rng(n)
    preds, r, rows = rng.normal(size=(k, 13)), np.abs(rng.normal(size=n)), rng.integers(0, k, n)
    got = conformal.cv_plus_bounds(preds, r, rows, level, chunk=5)  # chunks of 5 of 13 points: the seams too
    want = brute_cv_plus(preds, r, rows, level)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_ranks_and_too_few_rows():
    assert conformal.cv_plus_ranks(19, 0.9) == (2, 18)  # alpha (n+1) = 2 exactly: no float slip to 1 or 19
    assert conformal.min_rows(0.9) == 9 and conformal.cv_plus_ranks(9, 0.9) == (1, 9)
    with pytest.raises(ValueError, match="at least 9"):
        conformal.cv_plus_ranks(8, 0.9)


def _poly_fold_predictors(x, y, xt, k, rng):
    """K fold models that are cubic polynomial fits (cheap, fixed): predictions at xt and OOF residuals."""
    row_fold = rng.permutation(np.arange(len(x)) % k)
    preds, resid = np.empty((k, len(xt))), np.empty(len(x))
    for f in range(k):
        coef = np.polyfit(x[row_fold != f], y[row_fold != f], 3)
        preds[f] = np.polyval(coef, xt)
        resid[row_fold == f] = np.abs(y[row_fold == f] - np.polyval(coef, x[row_fold == f]))
    return preds, resid, row_fold


def test_coverage_exchangeable_20_seeds():
    # Statistical test, tolerance stated: y = sin(x) + N(0, 0.3^2), x ~ U(-3, 3) for training (60) and
    # test (200) alike. CV+ promises >= 0.80 (1 - 2 alpha) and gives ~0.90 in practice; the mean over
    # 20 x 200 points has a standard error of about 0.01 (binomial 0.005, plus the spread of coverage
    # across training draws ~ sqrt(0.09 / 60) = 0.04 per draw / sqrt(20) = 0.009), so 0.88 sits about
    # 2 standard errors below 0.90. The seeds are fixed: the number is the same on every run.
    cover = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x, xt = rng.uniform(-3, 3, 60), rng.uniform(-3, 3, 200)
        y, yt = np.sin(x) + rng.normal(0, 0.3, 60), np.sin(xt) + rng.normal(0, 0.3, 200)
        preds, resid, rows = _poly_fold_predictors(x, y, xt, 5, rng)
        lo, hi = conformal.cv_plus_bounds(preds, resid, rows, 0.9)
        cover.append(np.mean((yt >= lo) & (yt <= hi)))
    assert np.mean(cover) >= 0.88, cover


@pytest.fixture(scope="module")
def cv_plus_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cvplus") / "run"
    run_cli("regress", "--out", out, "--no-reference", "--set", "interval=cv_plus", "--set", "epochs=60",
            "--set", "hidden=16", "--set", "final=ensemble", "--set", "splitter=blocked", check=0)
    return out


def test_cli_round_trip(cv_plus_run, tmp_path):
    m = json.loads((cv_plus_run / "metrics.json").read_text())
    assert m["interval_method"] == "cv_plus" and 0 <= m["test_coverage_90"] <= 1 and m["test_width_90"] > 0
    info = torch.load(cv_plus_run / "model.pt", weights_only=True)["interval"]
    assert info["method"] == "cv_plus" and len(info["residuals"]) == len(info["row_fold"]) > 9
    test_csv = "src/nndl/data/bundled/regression_test.csv"
    proc = run_cli("predict", cv_plus_run, test_csv, "--json", check=0)
    rows = json.loads(proc.stdout)
    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
    lo, hi, y = (np.array([r[k] for r in rows]) for k in ("lower", "upper", "y"))
    assert np.all(hi > lo)
    # the saved run gives the test coverage metrics.json recorded (same models, same dict)
    assert abs(np.mean((y >= lo) & (y <= hi)) - m["test_coverage_90"]) < 1e-9
    ts = tmp_path / "m.ts"
    run_cli("export", cv_plus_run, "--format", "torchscript", "--out", ts, check=0)
    x = torch.as_tensor(np.array([[r["x"]] for r in rows], dtype=np.float32))
    with torch.no_grad():
        t_lo, t_hi = torch.jit.load(str(ts)).interval(x)
    np.testing.assert_allclose(t_lo.numpy().ravel(), lo, atol=1e-4)
    np.testing.assert_allclose(t_hi.numpy().ravel(), hi, atol=1e-4)


def test_bad_inputs(cv_plus_run, tmp_path):
    proc = run_cli("regress", "--set", "interval=conformal", check=2)
    assert proc.stderr.strip().count("\n") == 0 and "interval" in proc.stderr and "cv_plus" in proc.stderr
    few = tmp_path / "few.csv"
    few.write_text("x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(8)))
    proc = run_cli("regress", "--train", few, "--test", "", "--no-reference", "--set", "interval=cv_plus",
                   "--set", "folds=2", "--set", "epochs=2", "--out", tmp_path / "r", check=2)
    assert "interval=cv_plus" in proc.stderr and "at least 9" in proc.stderr
    payload = torch.load(cv_plus_run / "model.pt", weights_only=True)
    payload["interval"]["row_fold"][0] = 99  # a fold no model holds out
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save(payload, bad / "model.pt")
    proc = run_cli("predict", bad / "model.pt", "src/nndl/data/bundled/regression_test.csv", check=2)
    assert "'interval'" in proc.stderr and proc.stderr.strip().count("\n") == 0
    with pytest.raises(NndlError, match="interval"):
        from nndl.tools.predict import load_run

        load_run(bad / "model.pt")
