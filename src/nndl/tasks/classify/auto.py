"""``nndl classify --preset auto``: a small built-in search over recipes that fit the data kind.

Each candidate recipe is scored by stratified 3-fold cross-validation on the training split only
(the test set is never seen; after the first fold only the better half go on); the run then trains the best one as an ordinary run, so everything
after the choice (checkpoint, resume, figures, report) is the plain path. The candidates are few on
purpose: the search must stay at about two minutes on 2 CPU cores for data of the size of
scikit-learn's tables and digits, and on larger data it scores on a stratified subset
(:data:`SEARCH_ROWS`) with a per-fold time budget (:data:`FOLD_SECONDS`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from nndl.base.errors import NndlError
from nndl.data import Dataset

# Recipes for table rows: the default MLP, a narrower one, a wider one held back by decoupled weight
# decay and dropout (small tables overfit), and the default at a higher lr (few rows, few steps).
TABLE_RECIPES: dict[str, dict[str, Any]] = {
    "default mlp": {},  # the config as resolved (256-128-64 unless the user set hidden)
    "mlp 128": {"hidden": [128], "dropout": [0.1]},
    "mlp 512-256, adamw 1e-2": {"hidden": [512, 256], "dropout": [0.3, 0.3], "optimizer": "adamw",
                                "weight_decay": 1e-2},
    "default mlp, lr 3e-3": {"lr": 3e-3},
}
# Recipes for images: the MLP, the reference CNN with cosine decay, and the CNN with shifts; flips
# are added only for data whose classes survive mirroring (image_recipes).
IMAGE_RECIPES: dict[str, dict[str, Any]] = {
    "mlp": {"model": "mlp"},
    "cnn": {"model": "cnn", "schedule": "cosine"},
    "cnn + shifts": {"model": "cnn", "schedule": "cosine", "translate": 1},
}
SEARCH_ROWS = 2000  # candidates are scored on at most this many training rows (stratified)
FOLD_SECONDS = 10.0  # and each fold trains at most this long (only larger data reach it)
FOLDS = 3


@dataclass
class Choice:
    """What the search found: the winning recipe and every candidate's CV accuracy."""

    name: str
    settings: dict[str, Any]
    scores: dict[str, float]  # mean CV accuracy of the candidates that trained every fold
    seconds: float
    candidates: int = 0  # every candidate that trained a fold (halving dropped those not in scores)

    def metrics(self) -> dict[str, Any]:
        """Flat ``metrics.json`` keys (``search_*``), as the regression search writes them."""
        return {"search": "auto", "search_choice": self.name,
                "search_candidates": self.candidates or len(self.scores),
                        "search_cv_accuracy": self.scores[self.name], "search_seconds": self.seconds}


def image_recipes(ds: Dataset, mirror_ok: bool) -> dict[str, dict[str, Any]]:
    """The image candidates for ``ds``: 2-pixel shifts from 28 pixels up, flips only where ``mirror_ok``."""
    recipes = {name: dict(r) for name, r in IMAGE_RECIPES.items()}
    if min(ds.input_shape[1:]) >= 28:
        recipes["cnn + shifts"]["translate"] = 2
    if mirror_ok:
        recipes["cnn + shifts + flips"] = {**recipes["cnn + shifts"], "flip": True}
    return recipes


def candidates(cfg, ds: Dataset, user_set: set[str], mirror_ok: bool) -> dict[str, dict[str, Any]]:
    """The recipes for ``ds``'s kind, less those that would change a setting the user gave.

    A recipe that sets a key the user set (``--set model=cnn`` rules out the MLP recipes) is
    dropped rather than overruled; when none is left the user's own config is the one candidate.
    """
    recipes = image_recipes(ds, mirror_ok) if ds.is_image else TABLE_RECIPES
    kept = {name: r for name, r in recipes.items()
            if all(key not in user_set or getattr(cfg, key) == value for key, value in r.items())}
    return kept or {"your settings": {}}


def _halved(first: dict[str, float]) -> list[str]:
    """Successive halving after the first fold: the better half of the candidates (at least two) go on.

    A candidate whose first fold diverged or scored NaN never goes on; ties keep the earlier (simpler)
    recipe. Few candidates (two or fewer) all go on: halving them would leave nothing to compare.
    """
    finite = [n for n, a in first.items() if math.isfinite(a)]
    if len(first) <= 2:
        return finite
    keep = max(2, math.ceil(len(first) / 2))
    return sorted(finite, key=lambda n: (-first[n], list(first).index(n)))[:keep]


def _accuracies(folds: list[dict]) -> list[float]:
    """Each fold's validation accuracy, NaN for a diverged fold (a diverged candidate is never ranked)."""
    return [f["val_accuracy"] if not f["diverged"] else math.nan for f in folds]


def choose_recipe(cfg, ds: Dataset, user_set: set[str], mirror_ok: bool, fit_size: Callable,
                  cross_validate: Callable, echo: Callable[[str], None]) -> tuple[Any, Choice]:
    """Score each candidate by stratified K-fold CV on the training split and return the winner's config.

    Every candidate trains the first fold; the better half (:func:`_halved`) train the other folds
    and are ranked by their mean over all folds (successive halving: on Fashion-MNIST's four image
    recipes it saves four of twelve fold trainings, a third of the search).

    Parameters
    ----------
    cfg : ClassifyConfig
        The run's config (``search="auto"``), already fitted to the data's symmetries.
    ds : Dataset
    user_set : set of str
        Keys the user set; recipes never change them.
    mirror_ok : bool
        Whether mirrored images keep their classes (adds a flip recipe).
    fit_size : callable
        ``fit_size(cfg, rows) -> cfg`` (the run's optimiser-step rule, applied to the fold size).
    cross_validate : callable
        ``cross_validate(cfg, ds, folds, only) -> [{"val_accuracy": ..., "diverged": ...}, ...]`` on
        the training split, one dict per fold index in ``only`` (of ``folds`` stratified folds).
    echo : callable
        Receives one line per candidate and one for the choice.

    Returns
    -------
    (ClassifyConfig, Choice)
        ``cfg`` with the winning recipe's settings (``search`` stays ``"auto"``, so the saved config
        says how it was chosen), and the search's record (``scores``: the mean CV accuracy of the
        candidates that trained every fold). Ties go to the earlier (simpler) recipe.
    """
    start = time.perf_counter()
    recipes = candidates(cfg, ds, user_set, mirror_ok)
    rows = min(len(ds.y_train), SEARCH_ROWS)
    subset = rows if rows < len(ds.y_train) else 0
    fold_rows = rows - math.ceil(rows / FOLDS)
    trials, first = {}, {}
    skipped: list[NndlError] = []
    for name, recipe in recipes.items():
        trial = fit_size(dataclasses.replace(cfg, **recipe, subset=subset, time_limit=cfg.time_limit or FOLD_SECONDS),
                         fold_rows)
        try:
            first[name] = _accuracies(cross_validate(trial, ds, FOLDS, [0]))[0]
        except NndlError as e:  # a recipe that does not fit these data (a CNN on 8x8 images): not a candidate
            echo(f"auto: {name:<26} skipped: {e}")
            skipped.append(e)
            continue
        trials[name] = trial
    if not first and skipped:
        raise skipped[0]
    going_on = _halved(first)
    scores: dict[str, float] = {}
    for name in first:
        if name not in going_on:
            echo(f"auto: {name:<26} fold 1 accuracy {first[name]:.4f}: not in the better half, dropped")
            continue
        accs = [first[name], *_accuracies(cross_validate(trials[name], ds, FOLDS, list(range(1, FOLDS))))]
        scores[name] = sum(accs) / len(accs)  # NaN when any fold diverged
        echo(f"auto: {name:<26} CV accuracy {scores[name]:.4f} ({FOLDS} folds of {fold_rows} rows)")
    ranked = [n for n in scores if math.isfinite(scores[n])]  # a diverged candidate is never ranked
    if not ranked:
        raise NndlError("search=auto: every candidate recipe diverged on this data; pick a preset and a lower lr "
                        "(--preset mlp --set lr=1e-4)")
    best = max(ranked, key=lambda n: scores[n])  # max keeps the first of equal scores
    seconds = time.perf_counter() - start
    echo(f"auto: chose {best} ({len(first)} candidate{'' if len(first) == 1 else 's'} in {seconds:.1f} s)")
    return dataclasses.replace(cfg, **recipes[best]), Choice(best, recipes[best], scores, seconds, len(first))
