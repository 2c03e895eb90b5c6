"""The reference model of every regression run (nndl.tasks.regress.reference): a GP for one input column, ridge for
several; its keys in metrics.json, the regression scores against scikit-learn's own functions, the
figure, the settings and a missing scikit-learn."""
import json
import sys

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import nndl
from nndl.base import config
from nndl.tasks.regress import reference
from nndl.base.errors import NndlError
from nndl.figures import regression as regfig
from nndl.tools.predict import load_run, regression_predictions
from nndl.tasks.regress.task import load_data

from conftest import run_cli

EPOCHS = {"epochs": 20}
REFERENCE_KEYS = ["reference_model", "reference_detail", "reference_val_mse", "reference_test_mse",
                  "reference_test_r2", "reference_test_mae", "reference_test_rmse", "reference_test_coverage_90",
                  "reference_test_width_90"]


def _run(out, lines=None, **kw):
    echo = lines.append if lines is not None else (lambda s: None)
    kw.setdefault("overrides", EPOCHS)
    return nndl.regress(out=str(out), progress=False, echo=echo, **kw)


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory):
    lines: list[str] = []
    run = _run(tmp_path_factory.mktemp("ref") / "run", lines)
    return run, lines


@pytest.fixture(scope="module")
def bundled():
    return load_data(config.resolve("regress", "seed"))


def test_reference_keys_summary_line_and_determinism(bundled_run, tmp_path):
    run, lines = bundled_run
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert all(k in metrics for k in REFERENCE_KEYS + ["test_r2", "test_mae", "test_rmse", "test_width_90"])
    assert metrics["reference_model"] == "gp" and "RBF" in metrics["reference_detail"]
    assert sum(line.startswith("reference GP: test MSE") for line in lines) == 1
    again = json.loads((_run(tmp_path / "again", figures=False).path / "metrics.json").read_text())
    assert {k: again[k] for k in REFERENCE_KEYS} == {k: metrics[k] for k in REFERENCE_KEYS}


def test_scores_match_scikit_learn(bundled_run, bundled):
    run, _ = bundled_run
    metrics = run.metrics
    train, test = bundled
    # the reference: refitted here as the run fitted it (seed 0), scored by scikit-learn
    mean, lower, upper = reference.fit_gp(train.x, train.y, seed=0).interval(test.x)
    assert metrics["reference_test_mse"] == pytest.approx(np.mean((mean - test.y) ** 2), rel=1e-9)
    assert metrics["reference_test_r2"] == pytest.approx(r2_score(test.y, mean), rel=1e-9)
    assert metrics["reference_test_mae"] == pytest.approx(mean_absolute_error(test.y, mean), rel=1e-9)
    assert metrics["reference_test_rmse"] == pytest.approx(root_mean_squared_error(test.y, mean), rel=1e-9)
    assert metrics["reference_test_coverage_90"] == pytest.approx(np.mean((test.y >= lower) & (test.y <= upper)))
    assert metrics["reference_test_width_90"] == pytest.approx(np.mean(upper - lower), rel=1e-9)
    # the net: the saved run's predictions, scored by scikit-learn
    pred = regression_predictions(load_run(run.path), test.x)
    assert metrics["test_r2"] == pytest.approx(r2_score(test.y, pred["prediction"]), rel=1e-5, abs=1e-6)
    assert metrics["test_mae"] == pytest.approx(mean_absolute_error(test.y, pred["prediction"]), rel=1e-5)
    assert metrics["test_rmse"] == pytest.approx(root_mean_squared_error(test.y, pred["prediction"]), rel=1e-5)
    assert metrics["test_rmse"] ** 2 == pytest.approx(metrics["test_mse"], rel=1e-5)
    assert metrics["test_width_90"] == pytest.approx(np.mean(pred["upper"] - pred["lower"]), rel=1e-5)


def test_gp_learns_the_bundled_set(bundled_run, bundled):
    metrics = bundled_run[0].metrics
    train, test = bundled
    mean_predictor = float(np.mean((test.y - train.y.mean()) ** 2))
    assert metrics["reference_test_mse"] < 0.2 * mean_predictor  # measured: 0.070 vs 2.5
    assert metrics["reference_test_r2"] > 0.9
    assert metrics["reference_val_mse"] < 0.5 * mean_predictor  # the same shuffled folds as the net's val_mse


def test_ridge_matches_scikit_learn_ridge_and_its_leave_one_out_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)) * [1.0, 10.0, 0.1]
    y = x @ [1.0, -0.2, 5.0] + rng.normal(scale=0.5, size=40)
    model = reference.fit_ridge(x, y)
    alpha = model.estimator[-1].alpha_
    plain = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, y)
    xt = rng.normal(size=(10, 3))
    np.testing.assert_allclose(model.predict(xt)[0], plain.predict(xt), rtol=1e-8, atol=1e-10)
    # the interval's noise: leave-one-out residuals, one refit per row (the scaler refitted too)
    loo = [y[i] - make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(np.delete(x, i, 0), np.delete(y, i))
           .predict(x[i:i + 1])[0] for i in range(len(y))]
    # RidgeCV's leave-one-out keeps the scaler of all rows, so the two agree closely but not exactly
    assert model.noise_var == pytest.approx(np.mean(np.square(loo)), rel=0.05)
    assert np.all(model.predict(xt)[1] == pytest.approx(np.sqrt(model.noise_var)))


def test_several_inputs_get_ridge_and_no_reference_turns_it_off(tmp_path):
    from sklearn.datasets import load_diabetes

    assert [reference.choose("auto", 100, 1), reference.choose("auto", reference.GP_MAX_ROWS + 1, 1),
            reference.choose("auto", 100, 3), reference.choose("gp", 5000, 3)] == ["gp", "ridge", "ridge", "gp"]

    data = load_diabetes()
    table = np.column_stack([data.data[:120, :3], data.target[:120]])
    csv = tmp_path / "d.csv"
    np.savetxt(csv, table, delimiter=",", header="age,sex,bmi,target", comments="")
    lines: list[str] = []
    run = _run(tmp_path / "ridge", lines, train=str(csv), test="", figures=False)
    assert run.metrics["reference_model"] == "ridge" and np.isnan(run.metrics["reference_test_mse"])
    assert run.metrics["reference_val_mse"] > 0
    assert any(line.startswith("reference ridge: val MSE") for line in lines)
    proc = run_cli("regress", "--train", csv, "--test", "", "--out", tmp_path / "off", "--no-reference",
                   "--no-progress", "--no-figures", "--set", "epochs=5", check=0)
    assert not any(line.startswith("reference ") for line in proc.stdout.splitlines())
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert not any(k.startswith("reference_") for k in off)


def test_fit_figure_draws_the_reference(bundled_run, monkeypatch, tmp_path):
    run, _ = bundled_run
    assert (run.path / "figures" / "fit.png").exists()
    legends = []
    original = regfig.save
    monkeypatch.setattr(regfig, "save", lambda fig, path: (legends.append(
        [t.get_text() for t in fig.axes[0].get_legend().get_texts()]), original(fig, path))[1])
    train, test = load_data(config.resolve("regress", "seed"))
    loaded = load_run(run.path)
    ref = reference.fit_gp(train.x, train.y)
    grid = regfig.curve_inputs(train.x, test.x)
    mean, lower, upper = ref.interval(grid)
    curve = {"label": "reference GP", "x": grid, "mean": mean, "lower": lower, "upper": upper}
    regfig.fitted_function(loaded.model, loaded.fold_models, train.x, train.y, test.x, test.y, tmp_path / "fit.png",
                           interval=loaded.interval, reference=curve)
    assert "reference GP mean" in legends[0] and "reference GP 90% interval" in legends[0]


@pytest.mark.parametrize("value, expected", [("lasso", "'reference' = 'lasso': choose one of auto, gp, ridge, none"),
                                             ("1", "'reference' = '1': choose one of")])
def test_bad_reference_setting_is_one_line(value, expected, tmp_path):
    proc = run_cli("regress", "--out", tmp_path / "bad", "--set", f"reference={value}", check=2)
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    with pytest.raises(NndlError, match="choose one of auto, gp, ridge, none"):
        config.resolve("regress", None, {"reference": "lasso"})


def test_missing_scikit_learn(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)  # import sklearn... now raises ImportError
    lines: list[str] = []
    run = _run(tmp_path / "skipped", lines, overrides={"epochs": 5}, figures=False)
    assert [line for line in lines if "reference" in line and "=" not in line] == [
        "reference model skipped: pip install 'nndl[sklearn]'"]
    assert not any(k.startswith("reference_") for k in run.metrics)
    with pytest.raises(NndlError) as err:
        _run(tmp_path / "explicit", overrides={"epochs": 5, "reference": "gp"})
    assert "nndl[sklearn]" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "explicit").exists()


def test_bench_reference_row_is_the_runs_reference(bundled_run):
    """``nndl bench``'s gp row: the same fit on the same folds as a default run's reference."""
    import torch

    from nndl.tools.bench import format_table, regression_reference

    row = regression_reference(torch.device("cpu"))
    metrics = bundled_run[0].metrics
    assert row["model"] == "gp" and row["detail"] == metrics["reference_detail"]
    assert row["val_mse"] == pytest.approx(metrics["reference_val_mse"], rel=1e-12)
    assert row["test_mse"] == pytest.approx(metrics["reference_test_mse"], rel=1e-12)
    timing = {"seconds": 1.0, "val_mse": 0.5, "threads": 1}
    table = format_table({"classification": [], "hardware": {"gpu": None, "cpu": "cpu", "device": "cpu", "threads": 1},
                          "environment": {"torch": "x"},
                          "regression": {"epochs": 5, "typical": timing, "sequential": timing, "batched": timing,
                                         "speedup": 1.0, "speedup_vs_typical": 1.0, "reference": row}})
    assert f"regression reference GP (RBF + noise), same 5 folds: val MSE {row['val_mse']:.4f}" in table
