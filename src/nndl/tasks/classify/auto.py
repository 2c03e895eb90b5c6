"""``nndl classify --preset auto``: a small built-in search over recipes that fit the data kind.

Each candidate recipe is scored by stratified 3-fold cross-validation on the training split only
(the test set is never seen); the run then trains the best one as an ordinary run, so everything
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
    scores: dict[str, float]
    seconds: float

    def metrics(self) -> dict[str, Any]:
        """Flat ``metrics.json`` keys (``search_*``), as the regression search writes them."""
        return {"search": "auto", "search_choice": self.name, "search_candidates": len(self.scores),
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


def choose_recipe(cfg, ds: Dataset, user_set: set[str], mirror_ok: bool, fit_size: Callable,
                  cross_validate: Callable, echo: Callable[[str], None]) -> tuple[Any, Choice]:
    """Score each candidate by stratified K-fold CV on the training split and return the winner's config.

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
        ``cross_validate(cfg, ds, folds) -> [{"val_accuracy": ...}, ...]`` on the training split.
    echo : callable
        Receives one line per candidate and one for the choice.

    Returns
    -------
    (ClassifyConfig, Choice)
        ``cfg`` with the winning recipe's settings (``search`` stays ``"auto"``, so the saved config
        says how it was chosen), and the search's record. Ties go to the earlier (simpler) recipe.
    """
    start = time.perf_counter()
    recipes = candidates(cfg, ds, user_set, mirror_ok)
    rows = min(len(ds.y_train), SEARCH_ROWS)
    subset = rows if rows < len(ds.y_train) else 0
    fold_rows = rows - math.ceil(rows / FOLDS)
    scores: dict[str, float] = {}
    skipped: list[NndlError] = []
    for name, recipe in recipes.items():
        trial = dataclasses.replace(cfg, **recipe, subset=subset, time_limit=cfg.time_limit or FOLD_SECONDS)
        try:
            folds = cross_validate(fit_size(trial, fold_rows), ds, FOLDS)
        except NndlError as e:  # a recipe that does not fit these data (a CNN on 8x8 images): not a candidate
            echo(f"auto: {name:<26} skipped: {e}")
            skipped.append(e)
            continue
        accs = [f["val_accuracy"] for f in folds]
        scores[name] = (sum(accs) / len(accs) if accs and all(math.isfinite(a) and not f["diverged"]
                                                               for a, f in zip(accs, folds)) else math.nan)
        echo(f"auto: {name:<26} CV accuracy {scores[name]:.4f} ({FOLDS} folds of {fold_rows} rows)")
    ranked = [n for n in scores if math.isfinite(scores[n])]  # a diverged candidate is never ranked
    if not scores and skipped:
        raise skipped[0]
    if not ranked:
        raise NndlError("search=auto: every candidate recipe diverged on this data; pick a preset and a lower lr "
                        "(--preset mlp --set lr=1e-4)")
    best = max(ranked, key=lambda n: scores[n])  # max keeps the first of equal scores
    seconds = time.perf_counter() - start
    echo(f"auto: chose {best} ({len(scores)} candidate{'' if len(scores) == 1 else 's'} in {seconds:.1f} s)")
    return dataclasses.replace(cfg, **recipes[best]), Choice(best, recipes[best], scores, seconds)
