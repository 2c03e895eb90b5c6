"""A generalisation benchmark for 1-D regression with gaps: many generated problems, not one data set.

Each problem is 100 training points drawn uniformly on [-5, 5] outside one or two gaps, with
noise sigma, and 100 test points uniform over the whole range (gaps included) with noise
sigma_test. Some problems put a bump inside a gap, which no method can see: those measure
whether the interval admits it. For every strategy (preset, or auto with a given splitter) the
suite reports the test MSE as a ratio to the noise floor sigma_test^2, the coverage of the 90%
prediction interval on the test points, and the fitting time. Strategies see only the training
points; the test points are scored once. Defaults are chosen by the suite's means, never by one
problem's test set.

    .venv/bin/python bench/regression_suite.py [--strategies seed smooth auto] [--problems p1 p2]
                                               [--out bench/results/regression_suite.json]
    .venv/bin/python bench/regression_suite.py --speed   # the speed rows, quiet and under load
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nndl import config, uncertainty
from nndl.data.regression import target_function
from nndl.regression import auto_fit, fit_arrays, load_data

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Problem:
    name: str
    f: Callable[[np.ndarray], np.ndarray]
    gaps: list[tuple[float, float]]
    sigma: float
    sigma_test: float
    seed: int
    note: str = ""

    def sample(self, n_train: int = 100, n_test: int = 100):
        """Training x uniform on [-5, 5] minus the gaps (rejection sampling), test x uniform on [-5, 5]."""
        rng = np.random.default_rng(self.seed)
        xs = []
        while len(xs) < n_train:
            v = rng.uniform(-5, 5)
            if not any(a < v < b for a, b in self.gaps):
                xs.append(v)
        x = np.sort(np.array(xs))
        xt = np.sort(rng.uniform(-5, 5, n_test))
        y = self.f(x) + rng.normal(0, self.sigma, n_train)
        yt = self.f(xt) + rng.normal(0, self.sigma_test, n_test)
        return x[:, None].astype(np.float32), y.astype(np.float32), xt[:, None].astype(np.float32), yt.astype(np.float32)


# Smooth functions of different shapes; gap positions and widths, noise levels vary. Problems with
# sigma_test = sigma make interval coverage meaningful; sigma_test = 0.1 mirrors the homework set.
PROBLEMS = [
    Problem("homework-like", target_function, [(-3.0, -1.0), (1.7, 3.1)], 0.5, 0.1, 11, "bundled function, new draw"),
    Problem("sine", lambda x: np.sin(1.5 * x) + 0.2 * x, [(-1.0, 1.0)], 0.3, 0.3, 12),
    Problem("cubic", lambda x: 0.05 * x ** 3 - 0.5 * x, [(0.5, 2.5)], 0.5, 0.1, 13),
    Problem("bump-in-gap", lambda x: 0.3 * x + 1.5 * np.exp(-(x - 2) ** 2 / 0.5), [(1.0, 3.0)], 0.2, 0.2, 14,
            "a bump no training point sees"),
    Problem("tanh-step", lambda x: 2 * np.tanh(1.5 * x), [(-2.5, -1.0), (1.5, 3.0)], 0.3, 0.1, 15),
    Problem("cos-wide-gap", lambda x: 1.5 * np.cos(0.8 * x) + 0.1 * x, [(-1.5, 1.5)], 0.4, 0.4, 16),
    Problem("damped-sine", lambda x: 2 * np.sin(2 * x) * np.exp(-x ** 2 / 16), [(-3.5, -2.5), (0.0, 1.0)], 0.2, 0.1,
            17),
    Problem("smooth-abs", lambda x: np.sqrt(x ** 2 + 0.5) - 2, [(-2.0, -0.5), (2.0, 3.5)], 0.5, 0.5, 18),
    Problem("bump-in-gap-2", lambda x: np.sin(x) + np.exp(-(x + 2) ** 2 / 0.5), [(-3.0, -1.0)], 0.3, 0.3, 19,
            "a bump no training point sees"),
]

# A larger candidate set than the shipped AUTO_SPACE: wider nets and longer training too.
LARGE_SPACE = {"network": [["tanh", [32]], ["tanh", [64, 64]], ["tanh", [128, 128]], ["gelu", [32, 32]],
                           ["gelu", [64, 64]], ["gelu", [128, 128]], ["sigmoid", [64]], ["sigmoid", [64, 64]]],
               "weight_decay": [1e-4, 1e-3, 1e-2], "lr": [0.003, 0.01], "epochs": [600, 1500], "standardize": [True]}

# Strategy -> (preset, overrides, auto_fit keyword arguments)
STRATEGIES = {
    "seed": ("seed", {}, None),
    "smooth": ("smooth", {}, None),
    "seed-ensemble": ("seed", {"final": "ensemble"}, None),
    "auto": ("auto", {}, {}),  # the preset as shipped
    "auto-kfold": ("auto", {"splitter": "kfold"}, {}),
    "auto-cluster": ("auto", {"splitter": "cluster"}, {}),
    "auto-blocked-all": ("auto", {"splitter": "blocked"}, {"interior": False}),
    "auto-top8": ("auto", {"ensemble_top": 8}, {}),
    "auto-large": ("auto", {}, {"space": LARGE_SPACE}),
}


def bundled():
    cfg = config.resolve("regress", "seed")
    tr, te = load_data(cfg)
    return tr.x, tr.y, te.x, te.y


def run_one(strategy: str, data) -> dict:
    preset, overrides, auto_kwargs = STRATEGIES[strategy]
    x, y, xt, yt = data
    cfg = config.resolve("regress", preset, {**overrides, "test_path": ""})
    xs, ys = torch.as_tensor(x), torch.as_tensor(y)
    t0 = time.perf_counter()
    if auto_kwargs:  # a variant of the auto search that the config cannot express
        fit = auto_fit(cfg, xs, ys, None, **auto_kwargs)
    else:
        fit = fit_arrays(cfg, xs, ys)
    seconds = time.perf_counter() - t0
    center, lower, upper = uncertainty.predict_interval(fit.final, fit.spread_models, xt,
                                                        {**fit.interval, "spread_from": "folds"})
    return {"test_mse": float(np.mean((center - yt) ** 2)), "coverage_90": uncertainty.coverage(yt, lower, upper),
            "mean_width_90": float(np.mean(upper - lower)), "val_mse": float(np.mean([f.val_mse for f in fit.folds])),
            "seconds": seconds}


def speed(out: Path) -> None:
    """The regression speed rows in one process: the plain student loop, nndl one by one, nndl batched
    and ``--preset auto``; then typical vs batched (thread policy, and forced 2 threads) with one
    extra busy process on the machine (``nndl.bench.regression_loaded``), at the full 600 epochs."""
    from nndl.bench import format_table, hardware, regression_auto, regression_kfold, regression_loaded
    from nndl.runs import environment

    dev = torch.device("cpu")
    reg = {"epochs": 600, **regression_kfold(dev, 600), "auto": regression_auto(dev)}
    result = {"hardware": hardware(dev), "environment": environment(), "classification": [], "regression": reg,
              "regression_loaded": regression_loaded(dev, 600)}
    print(format_table(result), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", action="store_true", help="measure the speed rows instead (typical loop, "
                        "nndl one by one / batched, auto; then under load) -> bench/results/bench-regression-2core.json")
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--problems", nargs="*", default=None, help="problem names (default: all + bundled)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/regression_suite.json"))
    args = parser.parse_args()
    if args.speed:
        speed(ROOT / "bench/results/bench-regression-2core.json")
        return
    problems = [(p.name, p.sample(), p.sigma_test ** 2) for p in PROBLEMS]
    problems.append(("bundled", bundled(), 0.1 ** 2))
    if args.problems:
        problems = [p for p in problems if p[0] in args.problems]
    rows = []
    for name, data, floor in problems:
        for strategy in args.strategies:
            r = {"problem": name, "strategy": strategy, "noise_floor": floor, **run_one(strategy, data)}
            r["ratio"] = r["test_mse"] / floor
            rows.append(r)
            print(f"{name:<14} {strategy:<17} test MSE {r['test_mse']:.4f} ({r['ratio']:6.1f}x floor) "
                  f"cover {r['coverage_90']:.2f} width {r['mean_width_90']:.2f} val {r['val_mse']:.3f} "
                  f"{r['seconds']:5.1f} s", flush=True)
    summary = {}
    for strategy in args.strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        summary[strategy] = {"mean_ratio": float(np.mean([r["ratio"] for r in mine])),
                             "median_ratio": float(np.median([r["ratio"] for r in mine])),
                             "mean_coverage_90": float(np.mean([r["coverage_90"] for r in mine])),
                             "mean_seconds": float(np.mean([r["seconds"] for r in mine]))}
    table = [f"{'strategy':<17} {'mean ratio':>10} {'median ratio':>12} {'coverage 90%':>12} {'mean s':>7}"]
    for strategy, s in summary.items():
        table.append(f"{strategy:<17} {s['mean_ratio']:>10.1f} {s['median_ratio']:>12.1f} "
                     f"{s['mean_coverage_90']:>12.2f} {s['mean_seconds']:>7.1f}")
    print("\n" + "\n".join(table))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cpu = platform.processor() or platform.machine()
    out.write_text(json.dumps({"rows": rows, "summary": summary, "table": "\n".join(table),
                               "machine": {"cpu": cpu, "torch": torch.__version__,
                                           "threads_at_start": torch.get_num_threads()}}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
