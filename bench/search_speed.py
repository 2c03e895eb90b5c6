"""The seed report's grid search, three ways in one run: skorch + scikit-learn's GridSearchCV, nndl's
NNClassifier + scikit-learn's GridSearchCV (27 fits one after another), and nndl.sklearn.GridSearchCV
(the 27 fits trained as one stack). Each: the search's seconds (fits, scoring and the refit on all the
training images), the best CV accuracy and its parameters, and the refit model's test accuracy.

The grid is the seed's (lr {0.001, 0.01, 0.02} x epochs, 3-fold) on a stratified Fashion-MNIST subset;
epochs default to {2, 4, 6} to keep a run short (the seed's were {10, 20, 30}: --epochs 10,20,30
--subset 0). The network is the seed MLP in both libraries: 784-256-128-64-10, ReLU, dropout 0.2/0.1/0.1,
Adam, batch 256, logits + cross-entropy (skorch's default NLLLoss on a log-softmax output is the trap the
seed fell into; here skorch gets CrossEntropyLoss on logits). skorch gets pixels / 255 and shuffled
batches and no internal validation split (train_split=None), as NNClassifier with patience 0;
NNClassifier gets the raw pixels and standardises them inside the model.

    PYTHONPATH=src .venv/bin/python bench/search_speed.py [--subset 10000] [--epochs 2,4,6] [--only skorch,nndl,stacked]
                                                          [--threads N]

Writes bench/results/search_speed.json. On a shared machine the seconds are loaded seconds: compare
contenders of one run, not runs.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

CONTENDERS = ("skorch", "nndl", "stacked")
LABELS = {"skorch": "skorch NeuralNetClassifier + sklearn GridSearchCV",
          "nndl": "nndl NNClassifier + sklearn GridSearchCV",
          "stacked": "nndl.sklearn.GridSearchCV (stacked)"}


class SeedMLP(nn.Module):
    """The seed's MLP with logits out (what nndl's `mlp` preset builds)."""

    def __init__(self):
        super().__init__()
        sizes, drops = [784, 256, 128, 64], [0.2, 0.1, 0.1]
        layers = []
        for a, b, p in zip(sizes[:-1], sizes[1:], drops):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(p)]
        self.net = nn.Sequential(*layers, nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


def data(subset: int, seed: int):
    from nndl.data.fashion import load_fashion
    from nndl.data.splits import stratified_split

    d = load_fashion(None)
    images, labels = d.train_images, d.train_labels
    if subset and subset < len(labels):
        _, keep = stratified_split(labels, subset / len(labels), seed=seed)
        images, labels = images[keep], labels[keep]
    flat = lambda t: t.reshape(len(t), -1).numpy()  # noqa: E731 - uint8 pixels, as a user passes them
    return flat(images), labels.numpy(), flat(d.test_images), d.test_labels.numpy(), d.source


def search_for(name: str, grid: dict, seed: int):
    """The estimator and search class of one contender, and how it wants its X."""
    from sklearn.model_selection import GridSearchCV as SkGrid

    if name == "skorch":
        from skorch import NeuralNetClassifier

        torch.manual_seed(seed)
        net = NeuralNetClassifier(SeedMLP, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=0.001,
                                  max_epochs=10, batch_size=256, train_split=None, iterator_train__shuffle=True,
                                  verbose=0)
        return SkGrid(net, {"lr": grid["lr"], "max_epochs": grid["epochs"]}, cv=3), lambda x: (x / 255).astype(
            np.float32)
    from nndl.sklearn import GridSearchCV, NNClassifier

    est = NNClassifier(preset="mlp", random_state=seed)
    cls = GridSearchCV if name == "stacked" else SkGrid
    return cls(est, grid, cv=3), lambda x: x


def measure(name: str, grid: dict, x, y, xt, yt, seed: int) -> dict:
    search, prep = search_for(name, grid, seed)
    X, Xt = prep(x), prep(xt)
    t0 = time.perf_counter()
    search.fit(X, y)
    seconds = time.perf_counter() - t0
    best = {k: (v.item() if hasattr(v, "item") else v) for k, v in search.best_params_.items()}
    row = {"contender": LABELS[name], "key": name, "seconds": seconds, "best_cv": float(search.best_score_),
           "best_params": best, "test_accuracy": float(search.score(Xt, yt)),
           "mean_test_score": [float(s) for s in search.cv_results_["mean_test_score"]],
           "refit_seconds": float(search.refit_time_)}
    if name == "stacked":
        row.update(stack_sizes=search.stack_sizes_, stack_seconds=search.stack_seconds_,
                   fallback_reason=search.fallback_reason_)
    return row


def table(rows: list[dict]) -> str:
    out = ["| contender | seconds | best CV | best params | refit test |", "|---|---|---|---|---|"]
    out += [f"| {r['contender']} | {r['seconds']:.1f} | {r['best_cv']:.3f} | "
            f"{', '.join(f'{k}={v:g}' for k, v in sorted(r['best_params'].items()))} | {r['test_accuracy']:.3f} |"
            for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subset", type=int, default=10000, help="stratified training images (0 = all 60,000)")
    p.add_argument("--epochs", default="2,4,6", help="the grid's epochs (the seed's: 10,20,30)")
    p.add_argument("--only", default=",".join(CONTENDERS), help="contenders, comma-separated: " + ", ".join(CONTENDERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads for every contender (0 = torch's default)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "search_speed.json"))
    args = p.parse_args(argv)
    grid = {"lr": [0.001, 0.01, 0.02], "epochs": [int(e) for e in args.epochs.split(",")]}
    if args.threads:  # on a shared host one thread per process stalls less than two fighting for the cores
        torch.set_num_threads(args.threads)
    x, y, xt, yt, source = data(args.subset, args.seed)
    print(f"{len(y)} training / {len(yt)} test images from {source}; grid {grid}, 3-fold; "
          f"{torch.get_num_threads()} torch threads", flush=True)
    rows = []
    for name in args.only.split(","):
        rows.append(measure(name, grid, x, y, xt, yt, args.seed))
        r = rows[-1]
        print(f"{r['contender']}: {r['seconds']:.1f} s, best CV {r['best_cv']:.4f} {r['best_params']}, "
              f"test {r['test_accuracy']:.4f}", flush=True)
    print("\n" + table(rows))
    from nndl.tools.bench import hardware

    Path(args.out).write_text(json.dumps({"hardware": hardware(torch.device("cpu")), "torch": torch.__version__,
                                          "torch_threads": torch.get_num_threads(), "subset": len(y), "grid": grid,
                                          "load_average_after": list(os.getloadavg()), "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
