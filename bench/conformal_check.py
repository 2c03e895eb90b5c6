"""Checks of the CV+ option of bench/regression_recipes.py.

1. ``--mapie DIR``: the same fold models through MAPIE's CrossConformalRegressor (method "plus",
   the same folds via PredefinedSplit, absolute residual score) and through
   :func:`regression_recipes.cv_plus`, on every equal-noise problem of the suite: the largest
   difference of the bounds, and both coverages and widths. MAPIE is not a dependency of nndl:
   install it apart, e.g. ``pip install --no-deps --target /tmp/mapie mapie``.
2. The statistical check (also a pytest test: ``pytest bench/conformal_check.py``): on generated
   exchangeable data (training and test x drawn from one distribution, no gaps, equal noise),
   CV+ coverage of the 90% interval averaged over 20 seeds x 200 test points must be at least
   0.88. Why 0.88: CV+ guarantees at least 1 - 2 alpha = 0.80 in the worst case and about
   1 - alpha = 0.90 in practice (Barber et al. 2021); the mean over 4,000 test points of 20
   training sets has a standard error of about 0.008 (binomial 0.3/sqrt(4000) = 0.005, plus the
   spread of coverage across training draws, about sqrt(alpha (1 - alpha) / n) = 0.03 per draw
   over 20 draws = 0.007), so 0.88 is 2.5 standard errors below 0.90: a correct implementation
   fails it about once in 160 independent reruns, and the seeds are fixed, so a rerun gives the
   same number.

3. ``--nndl-mapie DIR``: nndl's own ``interval=cv_plus`` (:mod:`nndl.nn.conformal`, through
   ``nndl.tasks.regress.task.fit_arrays``) against MAPIE's CrossConformalRegressor (method
   "plus", absolute score, the run's folds via PredefinedSplit) on the *same* fold models, for
   the suite's equal-noise problems and a few exchangeable ones: largest bound difference,
   coverage and mean width of each.

    .venv/bin/python bench/conformal_check.py [--mapie /tmp/mapie] [--nndl-mapie /tmp/mapie] [--seeds 20]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import regression_recipes as rr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The statistical check's recipe: the winning recipe's kind with fewer members, so that 20 fits
# stay short; the guarantee does not depend on the model.
CHECK_RECIPE = replace(rr.Recipe(), seeds=1, epochs=500, interval="cvplus")


def exchangeable_problem(seed: int, n_train: int = 100, n_test: int = 200):
    """x uniform on [-5, 5] for training and test alike, y = sin(x) + 0.3 x + N(0, 0.3^2)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, (n_train, 1))
    xt = rng.uniform(-5, 5, (n_test, 1))
    f = lambda v: np.sin(v[:, 0]) + 0.3 * v[:, 0]  # noqa: E731
    return x, f(x) + rng.normal(0, 0.3, n_train), xt, f(xt) + rng.normal(0, 0.3, n_test)


def exchangeable_coverage(seeds: int = 20, recipe: rr.Recipe = CHECK_RECIPE) -> list[float]:
    """CV+ coverage of the 90% interval on :func:`exchangeable_problem` for seeds 0 .. seeds-1."""
    out = []
    for seed in range(seeds):
        x, y, xt, yt = exchangeable_problem(seed)
        _, lower, upper = rr.fit_recipe(x, y, replace(recipe, seed=seed)).predict(xt)
        out.append(float(np.mean((yt >= lower) & (yt <= upper))))
    return out


def test_cvplus_coverage_exchangeable():
    torch.set_num_threads(1)
    cover = exchangeable_coverage()
    assert np.mean(cover) >= 0.88, f"CV+ coverage {np.mean(cover):.3f} over 20 seeds is below 0.88: {cover}"


class _FoldLookup:
    """A scikit-learn regressor that, fitted on the rows of one training fold, predicts with that
    fold's ensemble of a fitted recipe: MAPIE then sees exactly the fold models cv_plus uses."""

    def __init__(self, fitted=None, x_train=None):
        self.fitted, self.x_train = fitted, x_train

    def get_params(self, deep=True):
        return {"fitted": self.fitted, "x_train": self.x_train}

    def set_params(self, **params):
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __sklearn_clone__(self):  # the fitted recipe is shared, never copied
        return _FoldLookup(self.fitted, self.x_train)

    def __sklearn_tags__(self):
        from sklearn.utils import Tags, RegressorTags, TargetTags

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True),
                    regressor_tags=RegressorTags())

    def fit(self, x, y):
        seen = {r.tobytes() for r in np.asarray(x, np.float64)}
        left_out = [i for i, r in enumerate(np.asarray(self.x_train, np.float64)) if r.tobytes() not in seen]
        folds = {int(self.fitted.calib["row_fold"][i]) for i in left_out}
        self.fold_ = folds.pop() if len(folds) == 1 else None  # None: fitted on every row
        self.is_fitted_ = True
        return self

    def predict(self, x):
        members = [m for m in self.fitted.members if m.config in self.fitted.chosen
                   and (m.fold == self.fold_ if self.fold_ is not None else m.fold >= 0)]
        mu, _ = self.fitted.member_moments(x, members)
        return mu.mean(0) * self.fitted.y_std + self.fitted.y_mean


def mapie_agreement(mapie_dir: str) -> list[dict]:
    """Per equal-noise suite problem: cv_plus and MAPIE's CV+ bounds on the same fold models."""
    sys.path.insert(0, mapie_dir)
    from mapie.regression import CrossConformalRegressor
    from sklearn.model_selection import PredefinedSplit

    import regression_suite as rs

    rows = []
    for name, (x, y, xt, yt), _, in_gap, equal_noise, split in rs.suite_problems():
        if not equal_noise:
            continue
        recipe = replace(rr.Recipe(), seeds=1, epochs=500, interval="cvplus")
        fitted = rr.fit_recipe(x, y, recipe)
        _, lo, hi = fitted.predict(xt)
        cv = PredefinedSplit(fitted.calib["row_fold"])
        mapie = CrossConformalRegressor(_FoldLookup(fitted, x), confidence_level=0.9, method="plus", cv=cv)
        mapie.fit_conformalize(x.astype(np.float64), y.astype(np.float64))
        _, pis = mapie.predict_interval(xt.astype(np.float64))
        m_lo, m_hi = pis[:, 0, 0], pis[:, 1, 0]
        cover = lambda a, b, sel=slice(None): float(np.mean((yt[sel] >= a[sel]) & (yt[sel] <= b[sel])))  # noqa: E731
        rows.append({"problem": name, "split": split, "max_bound_difference": float(max(np.abs(lo - m_lo).max(),
                                                                                      np.abs(hi - m_hi).max())),
                     "coverage_ours": cover(lo, hi), "coverage_mapie": cover(m_lo, m_hi),
                     "coverage_gaps_ours": cover(lo, hi, in_gap), "coverage_gaps_mapie": cover(m_lo, m_hi, in_gap),
                     "width_ours": float(np.mean(hi - lo)), "width_mapie": float(np.mean(m_hi - m_lo))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


class _NndlFolds(_FoldLookup):
    """Like :class:`_FoldLookup`, for an nndl fit: fitted on the rows outside fold k, it predicts with
    the run's fold-k models (the CV+ interval's ``mu_{-k}``); on every row, with all of them."""

    def __init__(self, fitted=None, x_train=None):
        super().__init__(fitted, x_train)

    def __sklearn_clone__(self):
        return _NndlFolds(self.fitted, self.x_train)

    def fit(self, x, y):
        seen = {r.tobytes() for r in np.asarray(x, np.float32)}
        info = self.fitted["info"]
        rows = np.asarray(self.fitted["rows"])  # the calibration rows, in the order of info["row_fold"]
        left_out = {info["row_fold"][j] for j, i in enumerate(rows)
                    if np.asarray(self.x_train, np.float32)[i].tobytes() not in seen}
        self.fold_ = left_out.pop() if len(left_out) == 1 else None
        self.is_fitted_ = True
        return self

    def predict(self, x):
        from nndl.nn.intervals import member_predictions

        info, models = self.fitted["info"], self.fitted["models"]
        keep = [m for m, k in zip(models, info["model_fold"]) if self.fold_ is None or k == self.fold_]
        return member_predictions(keep, np.asarray(x, np.float32)).mean(0)


def nndl_fit(x, y, overrides: dict):
    """nndl's plain fit with interval=cv_plus on arrays: (Fit, its CV+ dict, the interval models)."""
    from nndl.base import config as config_mod
    from nndl.tasks.regress.task import fit_arrays

    cfg = config_mod.resolve("regress", "seed", {"interval": "cv_plus", "reference": "none", **overrides})
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    result = fit_arrays(cfg, xt, yt)
    return result, result.interval, result.spread_models


def nndl_mapie_agreement(mapie_dir: str, overrides: dict | None = None) -> list[dict]:
    """Per problem: nndl's CV+ bounds and MAPIE's on the same fold models, with coverage and width."""
    sys.path.insert(0, mapie_dir)
    from mapie.regression import CrossConformalRegressor
    from sklearn.model_selection import PredefinedSplit

    from nndl.nn.intervals import bounds, member_predictions
    import regression_suite as rs

    overrides = overrides or {"epochs": 200, "final": "ensemble", "splitter": "kfold"}
    problems = [(name, data, in_gap) for name, data, _, in_gap, equal, _ in rs.suite_problems() if equal]
    problems += [(f"exchangeable-{s}", exchangeable_problem(s), None) for s in range(3)]
    rows = []
    for name, (x, y, xt, yt), in_gap in problems:
        x, y, xt, yt = (np.asarray(a, np.float32) for a in (x, y, xt, yt))
        result, info, models = nndl_fit(x, y, overrides)
        preds = member_predictions(models, xt)
        lo, hi = bounds(preds.mean(0), preds, info)
        # every row is held out once on a shuffled split, so the calibration rows are all rows, in order
        assert len(info["row_fold"]) == len(x)
        fitted = {"info": info, "models": models, "rows": np.arange(len(x))}
        mapie = CrossConformalRegressor(_NndlFolds(fitted, x), confidence_level=0.9, method="plus",
                                        cv=PredefinedSplit(np.asarray(info["row_fold"])))
        mapie.fit_conformalize(x.astype(np.float64), y.astype(np.float64))
        _, pis = mapie.predict_interval(xt.astype(np.float64))
        m_lo, m_hi = pis[:, 0, 0], pis[:, 1, 0]
        cover = lambda a, b, sel=slice(None): float(np.mean((yt[sel] >= a[sel]) & (yt[sel] <= b[sel])))  # noqa: E731
        row = {"problem": name, "n_train": len(x),
               "max_bound_difference": float(max(np.abs(lo - m_lo).max(), np.abs(hi - m_hi).max())),
               "coverage_nndl": cover(lo, hi), "coverage_mapie": cover(m_lo, m_hi),
               "width_nndl": float(np.mean(hi - lo)), "width_mapie": float(np.mean(m_hi - m_lo))}
        if in_gap is not None and in_gap.any():
            row.update(coverage_gaps_nndl=cover(lo, hi, in_gap), coverage_outside_nndl=cover(lo, hi, ~in_gap))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mapie", default="", help="a folder holding the mapie package (pip --target)")
    parser.add_argument("--nndl-mapie", default="", help="compare nndl's interval=cv_plus with MAPIE (its folder)")
    parser.add_argument("--skip-recipe", action="store_true", help="skip the recipe's exchangeable check")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench/results/conformal_check.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {}
    if args.mapie:
        result["mapie"] = mapie_agreement(args.mapie)
    if args.nndl_mapie:
        result["nndl_vs_mapie"] = mapie_rows = nndl_mapie_agreement(args.nndl_mapie)
        keys = ("max_bound_difference", "coverage_nndl", "coverage_mapie", "width_nndl", "width_mapie")
        print(json.dumps({"mean": {k: float(np.mean([r[k] for r in mapie_rows])) for k in keys}}))
    if args.skip_recipe:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
        return
    cover = exchangeable_coverage(args.seeds)
    result["exchangeable"] = {"seeds": args.seeds, "coverage_per_seed": cover, "mean": float(np.mean(cover)),
                              "threshold": 0.88, "passed": bool(np.mean(cover) >= 0.88)}
    print(json.dumps(result["exchangeable"]))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
