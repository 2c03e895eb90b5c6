"""scikit-learn's ``GridSearchCV`` and ``RandomizedSearchCV``, with every NNClassifier fit of a search trained as one stack.

These are scikit-learn's own classes (subclasses: same constructor, same ``cv_results_``,
``best_params_``, ``best_score_``, ``best_estimator_``, refit, scoring, error handling). What
changes is only when the fits are trained: when the estimator is an
:class:`~nndl.tools.sklearn.NNClassifier` MLP and the candidates differ only in parameters a
stack can hold (:data:`STACKABLE_PARAMS`), every candidate x fold model is trained before
scikit-learn's loop starts, as one batched model (:func:`nndl.training.stacked_classify.
train_stacked_classifiers`: the same weights as fitting one by one, up to float rounding).
scikit-learn's loop then runs as always; each ``fit`` it calls finds its trained model
(keyed by the parameters and the exact training rows) instead of training it, and the
scoring, ranking and refit on all the data are scikit-learn's. Anything else -- another
estimator, a parameter that changes the network, fit parameters, ``n_jobs`` other than 1 --
runs scikit-learn's loop unchanged (``fallback_reason_`` says why).

``mean_fit_time`` of a stacked candidate is the stack's training time shared evenly among its
fits (``std_fit_time`` 0): the fits were trained together, not one after another.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from nndl.base.errors import NndlError
from nndl.data.splits import stratified_split
from nndl.tools import sklearn as nn_sklearn
from nndl.tools.sklearn import FitDivergedError, NNClassifier, _numpy, _PREFITTED, prefit_key
from nndl.training.callbacks import Callback
from nndl.training.stacked_classify import Member, classify_stack_key, train_stacked_classifiers
from nndl.training.trainer import TrainResult
from nndl.training.threads import using_threads

from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV as _SkGridSearchCV
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array

__all__ = ["GridSearchCV", "RandomizedSearchCV", "STACKABLE_PARAMS"]

# NNClassifier parameters a search may vary and still train as one stack: they enter only the
# optimiser step, the penalties, the schedule, the loss, the stopping, the seed or the rows of
# the validation split (nndl.training.stacked_classify.CLASSIFY_PER_MODEL_FIELDS), never the network.
STACKABLE_PARAMS = frozenset({"lr", "weight_decay", "l1", "epochs", "schedule", "warmup_epochs", "min_lr_factor",
                              "patience", "label_smoothing", "val_fraction", "random_state", "verbose"})
# A stack larger than this (parameters with optimiser state and snapshots, plus one batch of
# activations) is split into several stacks trained one after another.
STACK_BYTES = 2 * 2**30


@dataclass
class _Fit:
    """One candidate x fold model, ready to train in a stack."""

    key: tuple
    build: Callable[[], tuple[torch.nn.Module, Member]]  # NNClassifier's _Scaled(net), initialised, and its rows
    cfg: Any
    device: torch.device
    wrapped: torch.nn.Module | None = None  # built when trained (a prefix fit copies its longest fit's)
    member: Member | None = None
    result: Any = None

    def built(self) -> "_Fit":
        if self.wrapped is None:
            self.wrapped, self.member = self.build()
        return self


@dataclass
class _Plan:
    candidates: list[dict]
    fits: list[_Fit]
    classes: np.ndarray
    n_features: int
    stack_sizes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    served: set = field(default_factory=set)


def _candidates(search) -> list[dict]:
    if isinstance(search, _SkGridSearchCV):
        return list(ParameterGrid(search.param_grid))
    return list(ParameterSampler(search.param_distributions, search.n_iter, random_state=search.random_state))


class _Fallback(Exception):
    """Why a search runs scikit-learn's own loop (the message)."""


def _why_not(search, candidates: list[dict], params: dict) -> str | None:
    """The reason these candidates cannot train as one stack, before any work; None when they might."""
    est = search.estimator
    if type(est) is not NNClassifier:
        return f"the estimator is a {type(est).__name__}, not an nndl NNClassifier"
    if params:
        return "fit parameters were given (" + ", ".join(sorted(params)) + ")"
    if search.n_jobs not in (None, 1):
        return f"n_jobs = {search.n_jobs}: fits in other processes cannot see the stack's models"
    if est.warm_start:
        return "warm_start = True"
    cv = search.cv
    if cv is not None and not isinstance(cv, int) and not hasattr(cv, "split") and iter(cv) is cv:
        return "cv is a one-shot iterator of splits (planning the stack would use it up)"
    varied = sorted({k for c in candidates for k in c} - STACKABLE_PARAMS)
    if varied:
        return f"the search varies {', '.join(varied)}, which changes the network or its data"
    return None


def _prepare(search, X, y, candidates: list[dict]) -> _Plan:
    """Every candidate x fold model, initialised as its own ``NNClassifier.fit`` would; raises _Fallback."""
    try:
        x_all = check_array(_numpy(X), dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise _Fallback(f"X is not a numeric table ({str(e).splitlines()[0]})") from None
    y_all = np.asarray(_numpy(y))
    try:
        check_classification_targets(y_all)
    except ValueError as e:  # each fit would refuse it: scikit-learn's loop records that as it would
        raise _Fallback(f"y: {e}") from None
    if y_all.ndim != 1 or len(np.unique(y_all)) < 2:
        raise _Fallback("y is not one label per row of at least two classes")
    classes = np.unique(y_all)
    cv = check_cv(search.cv, y, classifier=is_classifier(search.estimator))
    splits = list(cv.split(X, y))
    x_t = torch.from_numpy(np.ascontiguousarray(x_all))
    fits = []
    # set_params outside the try: a bad parameter name raises scikit-learn's own ValueError, as its loop would
    estimators = [clone(search.estimator).set_params(**clone(c, safe=False)) for c in candidates]
    for est in estimators:
        try:  # resolved once per candidate (a resolve costs ~0.1 s); each fit of it gets its own seed below
            resolved = est._resolve_config()
            est._check_config(resolved, (x_all.shape[1],))
            device = est._device(resolved)
        except NndlError as e:  # scikit-learn's loop records the failed fit (error_score) as it would
            raise _Fallback(str(e)) from None
        if resolved.model != "mlp":
            raise _Fallback(f"model = {resolved.model!r}: only MLPs train as a stack")
        for train, _ in splits:
            y_train = _safe_indexing(y, train)
            if not np.array_equal(np.unique(y_all[train]), classes):
                raise _Fallback("a training fold lacks a class (its model would have fewer outputs)")
            cfg = copy.copy(resolved)
            cfg.seed = est._seed()  # an int random_state: the same seed; None: a fresh draw per fit, as in fit
            rows = torch.from_numpy(np.asarray(train, dtype=np.int64))
            val = None
            if cfg.patience > 0:
                labels = est._encode(y_all[train], classes)
                a, b = stratified_split(labels, cfg.val_fraction, seed=cfg.seed)
                rows, val = rows[a], rows[b]

            def build(est=est, cfg=cfg, rows=rows, val=val):
                wrapped = est._build(cfg, (x_all.shape[1],), len(classes), x_t[rows])
                return wrapped, Member(rows, val, wrapped.mean.reshape(-1), wrapped.std.reshape(-1))

            key = prefit_key(est, _safe_indexing(X, train), y_train)
            fits.append(_Fit(key, build, cfg, device))
    return _Plan(candidates, fits, classes, x_all.shape[1])


def _stack_bytes(fit: _Fit) -> int:
    """Bytes one model adds to a stack: weights with gradient, Adam moments and two snapshots, and a batch."""
    params = sum(p.numel() for p in fit.wrapped.net.parameters())
    widths = sum(layer.out_features for layer in fit.wrapped.net.layers) + fit.wrapped.net.layers[0].in_features
    return 4 * (6 * params + 3 * fit.cfg.batch_size * widths)


def _prefix_key(fit: _Fit) -> tuple | None:
    """Fits with one key differ only in ``epochs`` and each is a prefix of the longest (None: no sharing).

    With a constant lr (a warm-up does not depend on the total either), no early stopping and no
    time limit, nothing in a fit's first E epochs depends on how many epochs follow: the weights
    after epoch E of the longest fit are those of the E-epoch fit."""
    cfg = fit.cfg
    if cfg.schedule != "constant" or cfg.patience > 0 or cfg.time_limit:
        return None
    per_model = tuple(getattr(cfg, f) for f in ("lr", "weight_decay", "l1", "warmup_epochs", "label_smoothing",
                                                "seed", "val_fraction"))
    return classify_stack_key(cfg), per_model, str(fit.device), fit.key[2:]  # key[2:]: the fold's exact rows


class _Snapshots(Callback):
    """Keep a stack member's weights at the end of the epochs its shorter prefix fits stop at."""

    def __init__(self, wanted: dict[int, set[int]]):
        self.wanted, self.kept = wanted, {}

    def on_epoch_end(self, state, logs) -> None:
        if state.epoch in self.wanted.get(state.index, ()):
            self.kept[state.index, state.epoch] = state.snapshot()


def _from_prefix(fit: _Fit, longest: _Fit, snaps: _Snapshots, index: int) -> None:
    """``fit`` as the first ``fit.cfg.epochs`` epochs of ``longest`` (trained as stack member ``index``)."""
    full, epochs = longest.result, fit.cfg.epochs
    rows = [dict(r) for r in full.history[:epochs]]
    fit.wrapped = copy.deepcopy(longest.wrapped)  # the same rows, so the same input scaling; weights below
    if full.diverged and len(full.history) <= epochs:  # it diverged within this fit's epochs: so did this fit
        fit.result = TrainResult(history=rows, best_epoch=full.best_epoch, best_metric=math.nan,
                                 stop_reason=full.stop_reason, diverged=True, train_seconds=full.train_seconds)
        return
    kept = iter(snaps.kept[index, epochs])
    with torch.no_grad():
        for layer in fit.wrapped.net.layers:  # stacked layout: weight (in, out), bias (1, out)
            layer.weight.copy_(next(kept).T)
            layer.bias.copy_(next(kept)[0])
    fit.result = TrainResult(history=rows, best_epoch=epochs, best_metric=math.nan,
                             train_seconds=sum(r["seconds"] for r in rows))


def _train(plan: _Plan, x_all: np.ndarray, y_codes: torch.Tensor, progress: bool) -> None:
    """Train the plan's fits in as few stacks as the memory bound allows, each epoch-prefix family once."""
    longest: dict[tuple, _Fit] = {}
    for f in plan.fits:
        key = _prefix_key(f)
        if key is not None and (key not in longest or f.cfg.epochs > longest[key].cfg.epochs):
            longest[key] = f
    trained = [f for f in plan.fits if _prefix_key(f) is None or longest[_prefix_key(f)] is f]
    groups: dict[tuple, list[_Fit]] = {}
    for f in trained:
        groups.setdefault((classify_stack_key(f.cfg), str(f.device)), []).append(f)
    x_t = torch.from_numpy(np.ascontiguousarray(x_all))
    t0 = time.perf_counter()
    for fits in groups.values():
        per_stack = max(1, STACK_BYTES // max(1, _stack_bytes(fits[0].built())))
        dev = fits[0].device
        x_dev, y_dev = x_t.to(dev), y_codes.to(dev)
        for s in range(0, len(fits), per_stack):
            chunk = [f.built() for f in fits[s:s + per_stack]]
            position = {id(f): i for i, f in enumerate(chunk)}
            prefixes = [(f, longest[_prefix_key(f)]) for f in plan.fits
                        if _prefix_key(f) is not None and id(longest[_prefix_key(f)]) in position
                        and longest[_prefix_key(f)] is not f]
            wanted: dict[int, set[int]] = {}
            for f, full in prefixes:
                wanted.setdefault(position[id(full)], set()).add(f.cfg.epochs)
            snaps = _Snapshots(wanted)
            nets = [f.wrapped.net.to(dev) for f in chunk]
            members = [Member(f.member.train_idx, f.member.val_idx, f.member.mean.to(dev), f.member.std.to(dev))
                       for f in chunk]
            with using_threads(getattr(chunk[0].cfg, "threads", 0)):
                results = train_stacked_classifiers(nets, x_dev, y_dev, members, [f.cfg for f in chunk],
                                                    progress=progress, callbacks=[snaps])
            for f, res in zip(chunk, results):
                f.wrapped.cpu()
                f.result = res
            for f, full in prefixes:
                _from_prefix(f, full, snaps, position[id(full)])
                f.wrapped.cpu()
            plan.stack_sizes.append(len(chunk))
    plan.seconds = time.perf_counter() - t0


def _served(plan: _Plan, fit: _Fit) -> Callable:
    """What ``NNClassifier.fit`` does instead of training, for this fit: set the fitted attributes."""
    def done(est: NNClassifier, X, y):
        Xv, _ = est._images(X)
        nn_sklearn.validate_data(est, Xv, _numpy(y), reset=True, dtype=np.float32)  # n_features_in_, names
        plan.served.add(fit.key)
        res = fit.result
        if res.diverged:  # the message of NNClassifier's own fit
            raise FitDivergedError(f"NNClassifier: training diverged: {res.stop_reason.replace('--set ', '')}")
        est.classes_, est.input_shape_ = plan.classes, (plan.n_features,)
        est._finish(fit.cfg, copy.deepcopy(fit.wrapped), res, warm=False)
        return est

    return done


class _StackedSearch:
    """The stacked fit shared by both searches (mixed in before scikit-learn's class)."""

    def fit(self, X, y=None, **params):
        """Run the search as scikit-learn's ``fit`` does, with the NNClassifier fits trained as one stack first.

        Returns
        -------
        self
        """
        self._validate_params()  # scikit-learn's checks of the search's own arguments come first, as there
        self._nndl_plan = None
        candidates = _candidates(self)
        reason = _why_not(self, candidates, params) if y is not None else "no y"
        plan = None
        if reason is None:
            try:
                with torch.random.fork_rng(devices=[]):  # initialising the models must not move the caller's RNG
                    plan = _prepare(self, X, y, candidates)
                    codes = torch.from_numpy(np.searchsorted(plan.classes, np.asarray(_numpy(y))).astype(np.int64))
                    _train(plan, check_array(_numpy(X), dtype=np.float32), codes,
                           progress=bool(getattr(self.estimator, "verbose", False)))
            except _Fallback as e:
                reason, plan = str(e), None
        self.fallback_reason_ = reason
        if plan is None:
            self.stack_sizes_, self.stack_seconds_ = [], 0.0
            return super().fit(X, y, **params)
        self._nndl_plan = plan
        token = {f.key: _served(plan, f) for f in plan.fits}
        _PREFITTED.update(token)
        try:
            super().fit(X, y, **params)
        finally:
            for key in token:
                _PREFITTED.pop(key, None)
            self._nndl_plan = None
        self.stack_sizes_, self.stack_seconds_ = plan.stack_sizes, plan.seconds
        self._stacked_fit_times(plan)
        return self

    def _stacked_fit_times(self, plan: _Plan) -> None:
        """A stacked candidate's fit time is its share of the stack's seconds (see the module docs)."""
        share = plan.seconds / max(1, len(plan.fits))
        per_candidate = len(plan.fits) // max(1, len(plan.candidates))
        for i in range(len(plan.candidates)):
            keys = [f.key for f in plan.fits[i * per_candidate:(i + 1) * per_candidate]]
            if all(k in plan.served for k in keys):
                self.cv_results_["mean_fit_time"][i] = share
                self.cv_results_["std_fit_time"][i] = 0.0

    def _run_search(self, evaluate_candidates, *, callback_ctx=None):
        plan = getattr(self, "_nndl_plan", None)
        if plan is None:
            return super()._run_search(evaluate_candidates, callback_ctx=callback_ctx)
        # the candidates the stack trained (a RandomizedSearchCV without random_state would draw others)
        return super()._run_search(lambda _, **kw: evaluate_candidates(plan.candidates, **kw),
                                   callback_ctx=callback_ctx)


class GridSearchCV(_StackedSearch, _SkGridSearchCV):
    """scikit-learn's ``GridSearchCV``; NNClassifier MLP grids over training parameters train as one stack.

    Same arguments and attributes as :class:`sklearn.model_selection.GridSearchCV`, plus
    ``stack_sizes_`` (models per stack trained; empty when scikit-learn's loop ran),
    ``stack_seconds_`` and ``fallback_reason_`` (why the stack was not used, or None).
    """


class RandomizedSearchCV(_StackedSearch, _SkRandomizedSearchCV):
    """scikit-learn's ``RandomizedSearchCV``; NNClassifier MLP searches over training parameters train as one stack.

    Same arguments and attributes as :class:`sklearn.model_selection.RandomizedSearchCV`, plus
    ``stack_sizes_``, ``stack_seconds_`` and ``fallback_reason_`` (see :class:`GridSearchCV`).
    """
