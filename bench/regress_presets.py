"""How the `smooth` regression preset was chosen: a small grid scored by 5-fold CV validation MSE.

Selection uses only the cross-validation score on the training set; the test
set is evaluated once per candidate for the record, never used to choose.

    .venv/bin/python bench/regress_presets.py [--out bench/results/regress_presets.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from nndl.base import config
from nndl.training.crossval import cross_validate
from nndl.tasks.regress.task import load_data, make_model_factory
from nndl.training.trainer import evaluate, train

GRID = {
    "activation": ["sigmoid", "tanh", "gelu"],
    "hidden": [[128, 256], [64, 64]],
    "lr": [0.02, 0.005],
    "schedule": ["constant", "cosine"],
    "standardize": [False, True],
    "weight_decay": [1e-5, 1e-3],
}


def score(overrides: dict) -> dict:
    cfg = config.resolve("regress", "seed", overrides)
    train_data, test_data = load_data(cfg)
    x, y = torch.as_tensor(train_data.x), torch.as_tensor(train_data.y)
    factory = make_model_factory(cfg, x, y)
    t0 = time.perf_counter()
    folds = cross_validate(factory, x, y, cfg, batched=True, progress=False)
    final = factory(cfg.folds)
    train(final, x, y, cfg, task="regression", progress=False)
    test = evaluate(final, torch.as_tensor(test_data.x), torch.as_tensor(test_data.y), "regression")["loss"]
    val = [f.val_mse for f in folds]
    return {**overrides, "train_mse": float(np.mean([f.train_mse for f in folds])), "val_mse": float(np.mean(val)),
            "val_mse_std": float(np.std(val)), "test_mse": test, "seconds": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/regress_presets.json")
    args = parser.parse_args()
    keys = list(GRID)
    rows = []
    for values in itertools.product(*GRID.values()):
        rows.append(score(dict(zip(keys, values))))
        r = rows[-1]
        print(f"{r['activation']:>7} {str(r['hidden']):>10} lr={r['lr']:<6} {r['schedule']:>8} std={r['standardize']!s:<5} "
              f"wd={r['weight_decay']:<6} val {r['val_mse']:.4f}±{r['val_mse_std']:.4f} test {r['test_mse']:.4f}", flush=True)
    rows.sort(key=lambda r: r["val_mse"])
    print("\nbest by CV validation MSE:")
    for r in rows[:5]:
        print(json.dumps(r))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"grid": GRID, "results": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
