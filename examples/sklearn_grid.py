"""The reference homework's grid search, run with scikit-learn's GridSearchCV over nndl's NNClassifier.

The homework searched lr in {0.001, 0.01, 0.02} x epochs in {10, 20, 30} with 3-fold
cross-validation of its Fashion-MNIST MLP through a skorch wrapper. Its network ended in a
log-softmax and skorch's default loss (NLLLoss) took the log again, so every fit's loss was NaN
and the search reported lr=0.001 with a score of 0.10 (chance) as "best". NNClassifier's models
output logits for a cross-entropy loss, and a fit whose loss turns NaN raises, so scikit-learn
marks it failed instead of ranking it.

Usage::

    python examples/sklearn_grid.py                 # all 60,000 training images: 27 fits + the refit
    python examples/sklearn_grid.py --subset 3000   # a quick look on 3,000 stratified images
    python examples/sklearn_grid.py --n-jobs 2      # folds in parallel processes (the estimator pickles)

The best configuration is refitted on the whole training set and scored once on the 10,000 test
images. Data are found as ``nndl classify`` finds them (``--data DIR``, ``$NNDL_DATA``, the Debian
package, the user cache).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.model_selection import GridSearchCV

from nndl.data.fashion import load_fashion
from nndl.data.splits import stratified_split
from nndl.sklearn import NNClassifier

GRID = {"lr": [0.001, 0.01, 0.02], "epochs": [10, 20, 30]}  # the homework's grid, unchanged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", type=int, default=0, help="use N stratified training images (0 = all 60,000)")
    parser.add_argument("--n-jobs", type=int, default=1, help="parallel fits (processes)")
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder (default: nndl's search order)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_fashion(args.data)
    images, labels = data.train_images, data.train_labels
    if args.subset and args.subset < len(labels):
        _, keep = stratified_split(labels, args.subset / len(labels), seed=args.seed)
        images, labels = images[keep], labels[keep]
    # Flat uint8 pixels, as a scikit-learn user would pass them; the estimator standardises inside the model.
    X, y = images.reshape(len(images), -1).numpy(), labels.numpy()
    print(f"{len(y)} training images from {data.source}; grid {GRID}, 3-fold")

    t0 = time.perf_counter()
    search = GridSearchCV(NNClassifier(preset="mlp", random_state=args.seed), GRID, cv=3, n_jobs=args.n_jobs,
                          error_score=np.nan)
    search.fit(X, y)
    seconds = time.perf_counter() - t0

    res = search.cv_results_
    splits = np.array([res[f"split{i}_test_score"] for i in range(3)])
    print(f"\n{'lr':>6} {'epochs':>6} {'mean accuracy':>14} {'std':>6} {'fit s':>6}")
    for i, params in enumerate(res["params"]):
        print(f"{params['lr']:>6g} {params['epochs']:>6} {res['mean_test_score'][i]:>14.4f} "
              f"{res['std_test_score'][i]:>6.4f} {res['mean_fit_time'][i]:>6.1f}")
    print(f"\nfinite fold scores: {int(np.isfinite(splits).sum())} of {splits.size}")
    print(f"best: {search.best_params_} with mean CV accuracy {search.best_score_:.4f} ({seconds:.0f} s in all)")
    test_x = data.test_images.reshape(len(data.test_images), -1).numpy()
    print(f"best model (refitted on all {len(y)} images) on the 10,000 test images: "
          f"{search.score(test_x, data.test_labels.numpy()):.4f}")


if __name__ == "__main__":
    main()
