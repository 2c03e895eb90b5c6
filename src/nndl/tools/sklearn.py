"""scikit-learn estimators over nndl's training loop: :class:`NNRegressor` and :class:`NNClassifier`.

They are thin: the parameters are nndl's config fields (resolved by :func:`nndl.base.config.resolve`,
so a preset works as in ``nndl classify --preset``), the networks come from :mod:`nndl.nn.models`
and training is :func:`nndl.training.trainer.train`, so early stopping, NaN/inf detection and the lr
schedules behave exactly as in the CLI. What scikit-learn adds is the data (``fit(X, y)``) and
the cross-validation (``cross_val_score``, ``GridSearchCV``), which is why the config fields
about data files and folds are not parameters here (see each estimator's ``_not_parameters``).

Conventions followed, because meta-estimators and ``check_estimator`` rely on them:

- ``__init__`` stores its arguments untouched; every check happens in ``fit``. A bad value
  raises :class:`NndlValueError` (an :class:`~nndl.base.errors.NndlError` -- one line naming the
  parameter -- that is also the ``ValueError`` scikit-learn expects for invalid parameters).
- A parameter left at ``None`` takes its value from ``preset`` (or nndl's defaults), so
  ``NNClassifier(preset="cnn", lr=0.01)`` is the ``cnn`` preset with one override.
- A fit whose loss becomes NaN or infinite raises :class:`FitDivergedError`; ``GridSearchCV``
  then records that fit as failed (``error_score``) and warns, instead of ranking a
  chance-level model.
- A row's prediction does not depend on the other rows predicted with it (every batch is padded
  to :data:`PREDICT_ROWS`), and a one-class fit is refused, as ``check_estimator`` expects.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

from nndl.base import config as config_mod
from nndl.base.model_kinds import MODEL_KINDS
from nndl.nn import augment
from nndl.data.splits import stratified_split
from nndl.base.errors import NndlError
from nndl.nn.models import Standardized, build_classifier, build_regressor
from nndl.tasks import classify as classify_task, regress as regress_task
from nndl.training.threads import using_threads
from nndl.training.trainer import autocast_on, pick_device, train

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("nndl.sklearn needs scikit-learn >= 1.6: pip install 'nndl[sklearn]'") from None

__all__ = ["NNRegressor", "NNClassifier", "NndlValueError", "FitDivergedError"]

IMAGE_MODELS = tuple(k.name for k in MODEL_KINDS.values() if k.images_only)

# Estimator parameters that are not config fields.
_OWN_PARAMETERS = ("preset", "random_state", "verbose", "warm_start")
# Rows per prediction batch, every batch padded to it: small enough that padding one row costs little, large
# enough for efficient kernels (measured on 2 CPU cores over 50,000 rows: MLPs as fast as in 2048-row
# batches, a small CNN ~1.5x slower; one padded row costs ~1 ms).
PREDICT_ROWS = 256
# Fields that fix the network's shape or its input scaling: a warm start must keep them.
_ARCHITECTURE = ("model", "hidden", "channels", "activation", "init", "dropout", "standardize")


# Fits that a stacked search (nndl.tools.search_cv) has trained before scikit-learn's loop asks for them, keyed by
# prefit_key: NNClassifier.fit hands out the trained model instead of training it again. Empty outside a search.
_PREFITTED: dict[tuple, Any] = {}


def _fingerprint(data: Any) -> tuple:
    """A cheap exact identity of an array's values: shape, dtype and a hash of its bytes."""
    arr = np.asarray(_numpy(data))
    if arr.dtype.kind in "biufc":
        raw = np.ascontiguousarray(arr).tobytes()
    else:  # strings or objects: hash their text, not the pointers of an object array
        raw = "\x00".join(map(repr, arr.ravel().tolist())).encode()
    return arr.shape, str(arr.dtype), hashlib.blake2b(raw, digest_size=16).hexdigest()


def prefit_key(estimator, X, y) -> tuple:
    """The key of one fit: the estimator's class and parameters and the exact training data."""
    params = tuple(sorted((k, repr(_plain(v))) for k, v in estimator.get_params(deep=False).items()))
    return type(estimator).__name__, params, _fingerprint(X), _fingerprint(y)


class NndlValueError(NndlError, ValueError):
    """A bad estimator parameter or input, in one line naming it.

    Both an :class:`~nndl.base.errors.NndlError` (nndl's user-error type) and a ``ValueError``,
    which is what scikit-learn's conventions and meta-estimators expect for invalid parameters.
    """


class FitDivergedError(NndlError, FloatingPointError):
    """The training loss became NaN or infinite (usually: the learning rate is too high).

    Raised by ``fit`` so a search records the fit as failed rather than scoring a broken model.
    """


def _plain(value: Any) -> Any:
    """NumPy scalars/arrays and tuples -> Python values, the types :func:`nndl.base.config.coerce` accepts.

    Search spaces hand out ``np.int64`` (``scipy.stats.randint``) and ``np.float64`` values.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple, list)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    return value


def _numpy(data: Any) -> Any:
    """Torch tensors (any device) -> NumPy; everything else is left to scikit-learn's validation."""
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    return data


class _Scaled(nn.Module):
    """``net((x - mean) / std)``: the fitted network takes inputs in the user's units.

    The statistics are buffers from the first fit's training data, so they travel with the
    module (pickling, ``partial_fit``) and validation folds never leak into them.
    """

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _std(t: torch.Tensor, dim, keepdim: bool = False) -> torch.Tensor:
    """Standard deviation for scaling; 1 where it is 0 or undefined (one sample), as StandardScaler does."""
    if t.numel() == 0 or len(t) < 2:
        return torch.ones_like(t.mean(dim, keepdim=keepdim) if dim is not None else t.mean())
    std = t.std(dim, keepdim=keepdim) if dim is not None else t.std()
    return torch.where(std > 0, std, torch.ones_like(std))


def _augmenter(cfg, shape: tuple[int, ...], x: torch.Tensor):
    """The training-batch transform from nndl's augmentation registry (``None`` when all are off).

    The estimator's inputs are raw (the model standardises them), so the registry's steps run on
    them as they are; ``noise`` is in units of the training inputs' std, as in ``nndl classify``.
    """
    settings = augment.options(cfg)
    std = x.float().std().item() or 1.0
    steps = augment.augmenter(settings, std=std, input_shape=shape)
    return None if steps is None else augment.InputTransform(lambda xb, gen: xb, steps, after=True)


class _NNBase(BaseEstimator):
    """What both estimators share: config resolution, seeding, the call to ``training.train``."""

    _task = ""  # the task's name (nndl.tasks): its config and presets
    _train_task = ""  # "regression" | "classification", as training.train names them
    # Config fields that are not estimator parameters, and why (a test keeps each table complete).
    _not_parameters: dict[str, str] = {}

    # -- configuration -----------------------------------------------------------------
    def _continues(self) -> bool:
        """Whether ``fit`` continues from the fitted weights (``warm_start`` on an already fitted estimator)."""
        return bool(self.warm_start) and hasattr(self, "model_")

    def _resolve_config(self, epochs: int | None = None):
        """The config for this fit: defaults < preset < the parameters not left at None < random_state."""
        name = type(self).__name__
        params = self.get_params(deep=False)
        overrides = {k: _plain(v) for k, v in params.items() if k not in _OWN_PARAMETERS and v is not None}
        if epochs is not None:
            overrides["epochs"] = epochs
        seed = self._seed()  # its own one-line error, already naming the estimator
        try:
            cfg = config_mod.resolve(self._task, self.preset, overrides, seed=seed)
        except NndlError as e:  # the config's words for the CLI ("--set lr=x") read as the parameter here
            raise NndlValueError(f"{name}: {str(e).replace('--set ', '')}") from None
        defaults = config_mod.TASK_CONFIGS[self._task]()
        unused = [key for key in self._not_parameters
                  if key != "seed" and getattr(cfg, key) != getattr(defaults, key)]
        if unused:
            raise NndlValueError(f"{name}: preset {self.preset!r} sets {', '.join(map(repr, unused))}, which {name} "
                                 f"does not use ({self._not_parameters[unused[0]]}); use another preset")
        if not isinstance(self.verbose, (bool, np.bool_, numbers.Integral)):
            raise NndlValueError(f"{name}: verbose = {self.verbose!r}: expected true or false")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise NndlValueError(f"{name}: warm_start = {self.warm_start!r}: expected true or false")
        return cfg

    def _seed(self) -> int:
        """``random_state`` as nndl's integer seed (an int is used as is, so results match ``--seed``)."""
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, (bool, np.bool_)):
            if not 0 <= rs < config_mod.SEED_LIMIT:
                raise NndlValueError(f"{type(self).__name__}: random_state = {rs}: must be in 0 .. 2**63 - 1")
            return int(rs)
        if rs is None or isinstance(rs, np.random.RandomState):
            return int(check_random_state(rs).randint(0, 2**31 - 1))
        raise NndlValueError(f"{type(self).__name__}: random_state = {rs!r}: give None, an int or a "
                             "numpy RandomState")

    def _check_warm(self, cfg) -> None:
        """A warm start continues the fitted network, so the fields that shape it must not change."""
        for key in _ARCHITECTURE:
            if hasattr(cfg, key) and getattr(cfg, key) != getattr(self.config_, key):
                raise NndlValueError(f"{type(self).__name__}: warm start keeps the fitted network, but '{key}' changed "
                                     f"from {getattr(self.config_, key)!r} to {getattr(cfg, key)!r}; set "
                                     "warm_start=False to start anew")

    # -- training ----------------------------------------------------------------------
    def _device(self, cfg) -> torch.device:
        try:
            return pick_device(cfg.device)
        except RuntimeError as e:
            raise NndlValueError(f"{type(self).__name__}: device = {cfg.device!r}: {e}") from None

    def _train(self, cfg, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_val=None, y_val=None,
               transform=None):
        """Train ``model`` (a fresh one, or a copy of the fitted one) with ``training.train``.

        Returns the model, moved to the CPU, and the :class:`~nndl.training.trainer.TrainResult`.

        The fitted attributes are set by the caller only after this returns, so a failed fit
        never leaves a half-trained model behind.
        """
        with using_threads(getattr(cfg, "threads", 0)):  # a fit's thread count must not leak into the caller
            result = train(model, x, y, cfg, task=self._train_task, x_val=x_val, y_val=y_val, transform=transform,
                           progress=bool(self.verbose), echo=print if self.verbose else (lambda s: None))
        if result.diverged:
            reason = result.stop_reason.replace("--set ", "")  # the estimator's parameter, not the CLI flag
            raise FitDivergedError(f"{type(self).__name__}: training diverged: {reason}")
        return model.cpu(), result

    def _finish(self, cfg, model: nn.Module, result, warm: bool) -> None:
        """Set the fitted attributes after a successful training call (epochs numbered across warm starts)."""
        before = list(self.history_) if warm else []
        self.model_ = model
        self.config_ = cfg
        self.history_ = before + [dict(row, epoch=row["epoch"] + len(before)) for row in result.history]
        self.n_iter_ = len(self.history_)
        self.stop_reason_ = result.stop_reason

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Model outputs for ``x`` through nndl's one inference path (batching, flip TTA, autocast), on the CPU.

        Every batch is padded to :data:`PREDICT_ROWS` rows (or ``eval_batch_size``, if smaller): a
        row's prediction is then the same whichever rows share its batch (scikit-learn's
        ``check_methods_subset_invariance``), at the cost of computing the padding of the last batch.
        """
        from nndl.nn.inference import Predictor

        cfg = self.config_
        device = self._device(cfg)
        model = self.model_.to(device)  # in place (a no-op on the CPU)
        rows = min(PREDICT_ROWS, getattr(cfg, "eval_batch_size", PREDICT_ROWS))
        try:
            out = Predictor(model, tta_flip=bool(getattr(cfg, "tta_flip", False)), amp=autocast_on(cfg, device),
                            batch_size=rows, fixed_batch=True).logits(x.to(device))
        finally:
            model.cpu()  # kept on the CPU between calls, so a pickled estimator loads anywhere
        return out.cpu()

    def _rng_guard(self, cfg):
        """Training seeds torch's global RNG; fork it so the caller's random stream is left as it was."""
        device = self._device(cfg)
        if device.type != "cuda":
            return torch.random.fork_rng(devices=[])
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.random.fork_rng(devices=[index])


def _store_params(estimator, given: dict) -> None:
    """Store every ``__init__`` argument unchanged under its own name (scikit-learn's contract: no
    validation or conversion in ``__init__``; ``fit`` checks the values)."""
    for name, value in given.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


class NNRegressor(RegressorMixin, _NNBase):
    """An nndl regression MLP as a scikit-learn regressor.

    Parameters
    ----------
    preset : str, optional
        An ``nndl regress`` preset (``seed``, ``smooth``) or a ``.toml``/``.json`` preset file;
        parameters left at ``None`` take their value from it (or nndl's defaults).
    hidden, activation, init, dropout, standardize
        The network (see :class:`nndl.tasks.regress.config.RegressConfig`). ``standardize=True`` scales inputs
        and the target with the training data's mean and std inside the model.
    optimizer, lr, momentum, nesterov, weight_decay, l1, epochs, batch_size, schedule, warmup_epochs, \
min_lr_factor, time_limit, device, threads
        Training, as in ``nndl regress`` (``threads`` > 0 is set for the fit and restored after it;
        0 leaves torch's setting alone). ``patience`` needs validation data, which this
        estimator does not hold out: leave it at 0 and search ``epochs`` instead.
    random_state : None, int or numpy RandomState
        Seeds initialisation and batch order (an int is nndl's ``seed``; ``None`` draws one).
    verbose : bool
        Show nndl's progress bars.
    warm_start : bool
        ``fit`` continues from the fitted weights (the optimiser state restarts).

    Attributes
    ----------
    model_ : torch.nn.Module
        The fitted network (on the CPU; takes float inputs shaped ``(n, n_features_in_)``).
    config_ : nndl.tasks.regress.config.RegressConfig
        The resolved config of the last fit.
    history_ : list of dict
        One row per epoch trained (``train_loss``, ``lr``, ``seconds``), over all warm starts.
    n_iter_ : int
        Epochs trained in all.
    stop_reason_ : str
    n_features_in_, feature_names_in_
        As in every scikit-learn estimator.
    """

    _task, _train_task = regress_task.NAME, "regression"
    _not_parameters = {
        "seed": "set by random_state",
        "train_path": "the data come from fit(X, y)", "test_path": "the data come from fit(X, y)",
        "x_cols": "the data come from fit(X, y)", "y_col": "the data come from fit(X, y)",
        **{key: "cross-validation and search are scikit-learn's (cross_val_score, GridSearchCV)"
           for key in ("folds", "final", "batched", "splitter", "group_col", "block_col", "search", "ensemble_top")},
        "probe_inputs": "only used by the figures of an `nndl regress` run",
        "reference": "a run's yardstick; fit scikit-learn's own estimators beside this one to compare",
        "interval": "a run's prediction interval; predict returns the mean, as scikit-learn's regressors do",
    }

    def __init__(self, *, preset=None, hidden=None, activation=None, init=None, dropout=None, standardize=None,
                 optimizer=None, lr=None, momentum=None, nesterov=None, weight_decay=None, l1=None, epochs=None,
                 batch_size=None, schedule=None, warmup_epochs=None, min_lr_factor=None, patience=None,
                 time_limit=None, device=None, threads=None, random_state=None, verbose=False, warm_start=False):
        _store_params(self, locals())

    def _check_config(self, cfg) -> None:
        if cfg.patience > 0:
            raise NndlValueError(f"NNRegressor: patience = {cfg.patience}: early stopping needs validation data, "
                                 "which NNRegressor does not hold out; leave patience at 0 and search epochs")

    def _data(self, X, y, reset: bool) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = validate_data(self, _numpy(X), _numpy(y), reset=reset, dtype=np.float32, y_numeric=True)
        y = np.asarray(y, dtype=np.float32)
        if not np.isfinite(y).all():  # float64 targets beyond float32's range
            raise NndlValueError("NNRegressor: y has values that overflow float32; rescale the target")
        return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.ascontiguousarray(y))

    def fit(self, X, y):
        """Fit on ``X`` (array, DataFrame or tensor, ``(n, n_features)``) and ``y`` (``(n,)``).

        Returns
        -------
        self
        """
        warm, cfg = self._continues(), self._resolve_config()
        self._check_config(cfg)
        if warm:
            self._check_warm(cfg)
        x, y = self._data(X, y, reset=not warm)
        return self._fit(cfg, x, y, warm)

    def partial_fit(self, X, y):
        """One epoch (one pass over ``X, y``) from the current weights; the first call starts a model.

        The optimiser state restarts on each call; input statistics (``standardize``) are those of the first call.
        """
        warm = hasattr(self, "model_")
        cfg = self._resolve_config(epochs=1)
        cfg = dataclasses.replace(cfg, warmup_epochs=min(cfg.warmup_epochs, 1.0))
        self._check_config(cfg)
        if warm:
            self._check_warm(cfg)
        x, y = self._data(X, y, reset=not warm)
        return self._fit(cfg, x, y, warm)

    def _build(self, cfg, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
        """A fresh MLP (seeded as fold 0 of ``nndl regress``), wrapped with the data's statistics if ``standardize``."""
        torch.manual_seed(cfg.seed)
        net = build_regressor(cfg, x.shape[1])
        if not cfg.standardize:
            return net
        return Standardized(net, x.mean(0), _std(x, 0), y.mean(), _std(y, None))

    def _fit(self, cfg, x: torch.Tensor, y: torch.Tensor, warm: bool):
        device = self._device(cfg)
        x, y = x.to(device), y.to(device)
        with self._rng_guard(cfg):
            model = (copy.deepcopy(self.model_) if warm else self._build(cfg, x, y)).to(device)
            model, result = self._train(cfg, model, x, y)
        self._finish(cfg, model, result, warm)
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted targets, ``(n,)`` float64."""
        check_is_fitted(self)
        X = validate_data(self, _numpy(X), reset=False, dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(X))
        return self._outputs(x).reshape(len(x)).double().numpy()


class NNClassifier(ClassifierMixin, _NNBase):
    """An nndl classifier (MLP, CNN, ResNet or FastNet) as a scikit-learn classifier.

    Parameters
    ----------
    preset : str, optional
        An ``nndl classify`` preset (``mlp``, ``cnn``, ``wide``, ``resnet``, ``fast``) or a
        preset file; parameters left at ``None`` take their value from it (or nndl's defaults).
    model : {"mlp", "cnn", "resnet", "fast"}
        The MLP takes any number of features. The image models take ``X`` as ``(n, C, H, W)``,
        ``(n, H, W)`` or ``(n, H*W)`` with a square ``H*W``; ``cnn`` needs at least 12x12 pixels.
    hidden, dropout, channels, activation, init
        The network (see :class:`nndl.tasks.classify.config.ClassifyConfig`).
    optimizer, lr, momentum, nesterov, weight_decay, l1, epochs, batch_size, schedule, warmup_epochs, \
min_lr_factor, label_smoothing, time_limit, device, eval_batch_size, amp, amp_cpu, compile, threads
        Training, as in ``nndl classify`` (``threads`` is restored after each fit; ``amp_cpu`` is bf16
        autocast on a CPU with native bf16).
    patience, val_fraction
        With ``patience > 0``, a stratified ``val_fraction`` of the training data is held out for
        early stopping and the best epoch's weights are kept; with ``patience = 0`` all the data train.
    flip, translate, erase, tta_flip
        Augmentation and test-time flips; they need image inputs (an image model, or 3-/4-d ``X``).
    random_state : None, int or numpy RandomState
        Seeds initialisation, batch order and augmentation (an int is nndl's ``seed``).
    verbose : bool
        Show nndl's progress bars.
    warm_start : bool
        ``fit`` continues from the fitted weights (the optimiser state restarts).

    Inputs are standardised inside the model with the first fit's statistics: per feature for
    tabular ``X``, per channel for images (as ``nndl classify`` does for Fashion-MNIST).

    Attributes
    ----------
    classes_ : ndarray
        The labels seen in ``fit`` (any type: ints, strings ...), sorted.
    model_ : torch.nn.Module
        The fitted network (on the CPU; it outputs logits).
    input_shape_ : tuple
        ``(n_features,)`` for tabular inputs, ``(C, H, W)`` for images.
    config_, history_, n_iter_, stop_reason_, n_features_in_, feature_names_in_
        As for :class:`NNRegressor`; ``history_`` rows also have ``train_acc`` (and
        ``val_loss``/``val_acc`` with early stopping).
    """

    _task, _train_task = classify_task.NAME, "classification"
    _not_parameters = {
        "seed": "set by random_state",
        "data": "the data come from fit(X, y)", "verify": "the data come from fit(X, y)",
        "subset": "the data come from fit(X, y)", "test_subset": "the data come from fit(X, y)",
        **{key: "the data come from fit(X, y)"
           for key in ("dataset", "label_col", "image_size", "test_fraction", "test_data")},
        "reference": "a run's baseline; compare estimators with scikit-learn's own tools (cross_val_score)",
        "calibrate": "calibration is scikit-learn's (CalibratedClassifierCV)",
        "search": "search is scikit-learn's (GridSearchCV, RandomizedSearchCV)",
        "mirror_invariant": "an estimator's flip and tta_flip are the caller's own settings, applied as given",
    }

    def __init__(self, *, preset=None, model=None, hidden=None, dropout=None, channels=None, activation=None,
                 init=None, optimizer=None, lr=None, momentum=None, nesterov=None, weight_decay=None, l1=None,
                 epochs=None, batch_size=None, schedule=None, warmup_epochs=None, min_lr_factor=None,
                 label_smoothing=None, patience=None, val_fraction=None, flip=None, translate=None, erase=None,
                 rotate=None, scale=None, noise=None, mixup=None, cutmix=None, cutmix_prob=None,
                 tta_flip=None, time_limit=None, device=None, eval_batch_size=None, amp=None, amp_cpu=None,
                 compile=None, threads=None, random_state=None, verbose=False, warm_start=False):
        _store_params(self, locals())

    # -- inputs ------------------------------------------------------------------------
    def _images(self, X) -> tuple[Any, tuple[int, ...] | None]:
        """Split 3-/4-d image arrays into flat rows for scikit-learn's validation, remembering the image shape."""
        X = _numpy(X)
        if isinstance(X, np.ndarray) and X.ndim in (3, 4):
            shape = (1, *X.shape[1:]) if X.ndim == 3 else tuple(X.shape[1:])
            return X.reshape(len(X), -1), shape
        return X, None

    def _input_shape(self, cfg, n_features: int, image_shape) -> tuple[int, ...]:
        """``(C, H, W)`` for images, ``(n_features,)`` for a tabular MLP; a one-line error otherwise."""
        if image_shape is not None:
            return image_shape
        if cfg.model in IMAGE_MODELS:
            side = math.isqrt(n_features)
            if side * side != n_features:
                raise NndlValueError(f"NNClassifier: model '{cfg.model}' needs images: give X as (n, C, H, W) or "
                                     f"(n, H*W) with a square H*W, got {n_features} features")
            return (1, side, side)
        return (n_features,)

    def _tensor(self, X: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).reshape(len(X), *shape)

    def _check_config(self, cfg, shape: tuple[int, ...]) -> None:
        if len(shape) == 1:
            images_only = [a.keys[0].name for a in augment.REGISTRY.values() if a.images_only] + ["tta_flip"]
            used = [k for k in images_only if getattr(cfg, k)]
            if used:
                raise NndlValueError(f"NNClassifier: '{used[0]}' = {getattr(cfg, used[0])!r} applies to images; "
                                     "give X as (n, C, H, W) or use an image model, or turn it off")

    def _encode(self, y, classes: np.ndarray) -> torch.Tensor:
        idx = np.searchsorted(classes, y)
        idx = np.clip(idx, 0, len(classes) - 1)
        unknown = classes[idx] != y
        if np.any(unknown):
            raise NndlValueError(f"NNClassifier: y has labels not among classes_ {list(classes)}: "
                                 f"{sorted(set(np.asarray(y)[unknown].tolist()))[:5]}")
        return torch.from_numpy(idx.astype(np.int64))

    def _build(self, cfg, shape: tuple[int, ...], n_classes: int, x: torch.Tensor) -> nn.Module:
        """A fresh network for ``shape`` wrapped with the training data's input statistics."""
        torch.manual_seed(cfg.seed)
        try:
            net = build_classifier(cfg, shape if len(shape) == 3 else (1, 1, shape[0]), n_classes)
        except ValueError as e:
            raise NndlValueError(f"NNClassifier: {e}") from None
        dims = [0] if len(shape) == 1 else [0, 2, 3]  # per feature, or per channel over all pixels
        return _Scaled(net, x.mean(dims, keepdim=True)[0], _std(x, dims, keepdim=True)[0])

    # -- fitting -----------------------------------------------------------------------
    def fit(self, X, y):
        """Fit on ``X`` (array, DataFrame or tensor; see ``model`` for image shapes) and labels ``y``.

        Returns
        -------
        self
        """
        if _PREFITTED and not self._continues():  # a stacked search already trained this fit (nndl.tools.search_cv)
            done = _PREFITTED.get(prefit_key(self, X, y))
            if done is not None:
                return done(self, X, y)
        warm, cfg = self._continues(), self._resolve_config()
        return self._fit_checked(cfg, X, y, warm, classes=None)

    def partial_fit(self, X, y, classes=None):
        """One epoch (one pass over ``X, y``) from the current weights.

        The first call needs ``classes`` (every label the model will see) and starts a model;
        it also fixes the input statistics. The optimiser state restarts on each call, and
        no validation data are held out (``patience`` does not apply).
        """
        warm = hasattr(self, "model_")
        if not warm and classes is None:
            raise NndlValueError("NNClassifier.partial_fit: the first call needs classes= (all labels, "
                                 "e.g. np.unique(y))")
        cfg = self._resolve_config(epochs=1)
        cfg = dataclasses.replace(cfg, warmup_epochs=min(cfg.warmup_epochs, 1.0), patience=0)
        if warm and classes is not None and not np.array_equal(self._given_classes(classes), self.classes_):
            raise NndlValueError(f"NNClassifier.partial_fit: classes {list(np.unique(classes))} differ from the "
                                 f"first call's {list(self.classes_)}")
        return self._fit_checked(cfg, X, y, warm, classes=classes)

    def _given_classes(self, classes) -> np.ndarray:
        """``classes`` of ``partial_fit`` as a sorted array of labels (a scalar or a 2-d array is one line)."""
        values = np.asarray(_numpy(classes))
        if values.ndim != 1 or len(values) == 0:
            raise NndlValueError(f"NNClassifier.partial_fit: classes = {classes!r:.60}: give every label the model "
                                 "will see, as a list or 1-d array (e.g. np.unique(y))")
        return np.unique(values)

    def _fit_checked(self, cfg, X, y, warm: bool, classes):
        if warm:
            self._check_warm(cfg)
        X, image_shape = self._images(X)
        X, y = validate_data(self, X, _numpy(y), reset=not warm, dtype=np.float32)
        check_classification_targets(y)
        if warm:
            shape = self.input_shape_
            if image_shape is not None and image_shape != shape:
                raise NndlValueError(f"NNClassifier: X has images of shape {image_shape}, but the fitted model "
                                     f"takes {shape}")
            classes = self.classes_
        else:
            shape = self._input_shape(cfg, X.shape[1], image_shape)
            source = "y" if classes is None else "classes"
            classes = np.unique(y) if classes is None else self._given_classes(classes)
            if len(classes) < 2:  # as scikit-learn's classifiers: nothing to tell apart
                raise NndlValueError(f"NNClassifier: only one class ({_plain(classes[0])!r}) in {source}; a "
                                     "classifier needs at least two classes")
        self._check_config(cfg, shape)
        x, labels = self._tensor(X, shape), self._encode(y, classes)
        device = self._device(cfg)
        x_val = y_val = None
        if cfg.patience > 0:
            tr, va = stratified_split(labels, cfg.val_fraction, seed=cfg.seed)
            x, labels, x_val, y_val = x[tr], labels[tr], x[va].to(device), labels[va].to(device)
        x, labels = x.to(device), labels.to(device)
        with self._rng_guard(cfg):
            model = (copy.deepcopy(self.model_) if warm else self._build(cfg, shape, len(classes), x)).to(device)
            model, result = self._train(cfg, model, x, labels, x_val, y_val,
                                        _augmenter(cfg, shape, x))
        self.classes_ = classes
        self.input_shape_ = shape
        self._finish(cfg, model, result, warm)
        return self

    # -- prediction --------------------------------------------------------------------
    def _logits(self, X) -> torch.Tensor:
        check_is_fitted(self)
        X, image_shape = self._images(X)
        if image_shape is not None and image_shape != self.input_shape_:
            raise NndlValueError(f"NNClassifier: X has images of shape {image_shape}, but the model was fitted on "
                                 f"{self.input_shape_}")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        x = self._tensor(X, self.input_shape_)
        return self._outputs(x)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, ``(n, len(classes_))``, columns in the order of ``classes_``."""
        return self._logits(X).double().softmax(1).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable label of each row (values from ``classes_``)."""
        best = self._logits(X).argmax(1).numpy()  # first: it raises NotFittedError before classes_ is read
        return self.classes_[best]
