"""Augmentation as a registry of batched tensor ops, and the training-input transform.

Every augmentation works on the whole batch on its device (no per-image Python;
images ``(N, C, H, W)`` of any channel count and size) and draws its randomness
from the generator it is given, so a seed fixes every batch. Each one is
registered in :data:`REGISTRY` under a name, with the config keys it reads,
their valid ranges, and whether it needs images. :class:`Augmenter` composes
the enabled ones in one fixed order, the order of :data:`REGISTRY`, on ``[0, 1]``
images before normalisation (so padding and erasing use the true background 0):

1. ``flip``, ``translate``, ``rotate``, ``scale``, ``erase`` (images only;
   ``rotate`` and ``scale`` are composed into one affine warp: one interpolation);
2. ``noise``, whose std is in normalised units (scaled by the data set's std);
3. across the batch, changing the targets: ``mixup``, then ``cutmix`` (an image
   that gets cutmix does not also get mixup). Mixing commutes with the affine
   normalisation, so doing it before is exact. The augmenter keeps the partner
   index and weight of its last batch, and ``mixed_targets(labels)`` turns the
   batch's labels into :class:`MixedTargets`, whose cross-entropy the training
   loop uses instead of the plain one.

Table rows (``(N, F)``, already standardised) take only the augmentations not
marked ``images_only`` (noise, mixup); asking for another is refused in one line.

Adding an augmentation is one function decorated with :func:`register` here,
plus its config field (same range) in :class:`nndl.tasks.classify.config.ClassifyConfig`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from nndl.base.errors import NndlError

# The default normalisation (a caller that passes none gets Fashion-MNIST's, as before datasets existed).
from nndl.data.fashion_mnist import MEAN, STD  # noqa: E402

# Stages in the order they run; "pixels" and "affine" steps may interleave (consecutive affine
# steps share one warp), the others follow in this order.
STAGES = ("pixels", "affine", "values", "mix")


# ----------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Key:
    """One config key of an augmentation: its default (which means "off" for the first key) and range."""

    name: str
    default: Any
    low: float = 0.0
    high: float = 1.0
    integer: bool = False

    def check(self, value) -> None:
        """Raise NndlError (one line, naming the key) when ``value`` is out of range."""
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise NndlError(f"config key '{self.name}' = {value!r}: must be true or false")
            return
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.integer:
            ok = float(value).is_integer()
        if not ok or not self.low <= value <= self.high:
            span = f"{self.low:g}..{self.high:g}" if self.integer else f"[{self.low:g}, {self.high:g}]"
            raise NndlError(f"config key '{self.name}' = {value!r}: must be in {span}")


@dataclass(frozen=True)
class Augmentation:
    """A registered augmentation.

    ``fn`` depends on ``stage``: ``pixels`` steps are ``fn(x, gen, **params) -> x``
    on [0, 1] images; ``affine`` steps return ``(N, 3, 3)`` matrices
    ``fn(n, h, w, gen, device, **params)`` mapping output to input coordinates in
    ``affine_grid``'s normalised frame; ``values`` steps are
    ``fn(x, gen, unit, **params) -> x`` where ``unit`` is one normalised unit in
    the input's units (the data set's std); ``mix`` steps are
    ``fn(x, partner, gen, **params) -> (mixed, lam, applied)``.
    """

    name: str
    keys: tuple[Key, ...]
    stage: str
    images_only: bool
    fn: Callable
    help: str

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {k.name: values.get(k.name, k.default) for k in self.keys}

    def enabled(self, values: Mapping[str, Any]) -> bool:
        """On when the first (strength) key differs from its default of 0 / false."""
        first = self.keys[0]
        return values.get(first.name, first.default) != first.default


REGISTRY: dict[str, Augmentation] = {}


def register(name: str, *keys: Key, stage: str = "pixels", images_only: bool = True, help: str = ""):
    """Decorator: add ``fn`` to :data:`REGISTRY`; registration order is the order of application."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    last = max((STAGES.index(a.stage) for a in REGISTRY.values()), default=0)
    if max(STAGES.index(stage), 1) < max(last, 1):  # pixels/affine interleave; later stages come in order
        raise ValueError(f"{name}: a {stage!r} step cannot follow a {STAGES[last]!r} step")

    def deco(fn):
        REGISTRY[name] = Augmentation(name, keys, stage, images_only, fn, help or (fn.__doc__ or "").split("\n")[0])
        return fn

    return deco


def config_keys() -> dict[str, Key]:
    """Every augmentation config key, by name."""
    return {k.name: k for aug in REGISTRY.values() for k in aug.keys}


def options(cfg) -> dict[str, Any]:
    """The augmentation settings of a config object (keys it lacks take their defaults = off)."""
    return {name: getattr(cfg, name, key.default) for name, key in config_keys().items()}


# ----------------------------------------------------------------------------- pixel steps (on [0, 1] images)
def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2. ``x``: (B, C, H, W)."""
    mask = torch.rand(len(x), device=x.device, generator=gen) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def random_translate(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in x and y (zero padding, then a per-image crop)."""
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # gather all crops at once


def random_erase(x: torch.Tensor, p: float, gen: torch.Generator, area=(0.02, 0.2), aspect=(0.3, 3.3)) -> torch.Tensor:
    """With probability ``p`` per image, set a random rectangle (2-20% of the area) to background."""
    if p <= 0:
        return x
    b, _, h, w = x.shape
    dev = x.device
    frac = torch.empty(b, device=dev).uniform_(*area, generator=gen)
    log_ratio = torch.empty(b, device=dev).uniform_(torch.log(torch.tensor(aspect[0])).item(),
                                                    torch.log(torch.tensor(aspect[1])).item(), generator=gen)
    ratio = log_ratio.exp()
    eh = (frac * h * w * ratio).sqrt().clamp(1, h)
    ew = (frac * h * w / ratio).sqrt().clamp(1, w)
    y0 = torch.rand(b, device=dev, generator=gen) * (h - eh)
    x0 = torch.rand(b, device=dev, generator=gen) * (w - ew)
    apply = torch.rand(b, device=dev, generator=gen) < p
    return x.masked_fill(_box_mask(h, w, y0, y0 + eh, x0, x0 + ew, apply)[:, None], 0.0)


def _box_mask(h: int, w: int, y0, y1, x0, x1, apply) -> torch.Tensor:
    """(B, H, W) bool: pixel (r, c) lies in ``[y0, y1) x [x0, x1)`` of its image (and ``apply`` is set)."""
    rows = torch.arange(h, device=y0.device)[None, :, None]
    cols = torch.arange(w, device=y0.device)[None, None, :]
    return ((rows >= y0[:, None, None]) & (rows < y1[:, None, None]) &
            (cols >= x0[:, None, None]) & (cols < x1[:, None, None]) & apply[:, None, None])


register("flip", Key("flip", False), help="random horizontal flip")(lambda x, gen, flip: random_flip(x, gen))
register("translate", Key("translate", 0, 0, 8, integer=True), help="random shift of up to N pixels")(
    lambda x, gen, translate: random_translate(x, translate, gen))


# ----------------------------------------------------------------------------- affine steps (one warp)
def affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp each image by its (N, 3, 3) or (N, 2, 3) output->input matrix: bilinear, zero (background) padding.

    Coordinates are ``affine_grid``'s: -1..1 across each axis, pixel centres not on the borders.
    """
    grid = F.affine_grid(theta[:, :2].to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotation_matrix(degrees: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, 3, 3) matrices that turn images counter-clockwise (as displayed) by ``degrees`` about their centre.

    The normalised frame stretches a non-square image to a square, so the
    off-diagonal terms carry the aspect ratio: the rotation is rigid in pixels.
    """
    rad = degrees.float() * (math.pi / 180)
    cos, sin = rad.cos(), rad.sin()
    theta = torch.zeros(len(degrees), 3, 3, device=degrees.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * (h / w)
    theta[:, 1, 0], theta[:, 1, 1] = sin * (w / h), cos
    theta[:, 2, 2] = 1
    return theta


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of ``x`` (N, C, H, W) counter-clockwise by its angle in ``degrees`` (N,)."""
    return affine(x, rotation_matrix(degrees.to(x.device), x.shape[-2], x.shape[-1]))


def zoom_matrix(factor: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) matrices that magnify by ``factor`` with the input point (``shift_x``, ``shift_y``) at the centre."""
    theta = torch.zeros(len(factor), 3, 3, device=factor.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / factor
    theta[:, 0, 2], theta[:, 1, 2] = shift_x, shift_y
    theta[:, 2, 2] = 1
    return theta


@register("rotate", Key("rotate", 0.0, 0, 180), stage="affine")
def random_rotation(n: int, h: int, w: int, gen: torch.Generator, device, rotate: float) -> torch.Tensor:
    """random rotation by up to N degrees either way (bilinear, background padding)"""
    degrees = (torch.rand(n, device=device, generator=gen) * 2 - 1) * rotate
    return rotation_matrix(degrees, h, w)


@register("scale", Key("scale", 0.0, 0, 0.9), stage="affine")
def random_zoom(n: int, h: int, w: int, gen: torch.Generator, device, scale: float) -> torch.Tensor:
    """random zoom by a factor in [1 - s, 1 + s] at a random place: a resized crop, or a shrink into background"""
    factor = 1 + (torch.rand(n, device=device, generator=gen) * 2 - 1) * scale
    # The window the output shows is 2/factor wide: zooming in, it may move as far as keeps its outer
    # pixel centres within the image's (a random resized crop, no background bleeding in at the
    # border); zooming out, as far as keeps the whole image in the frame.
    room = (1 - 1 / factor).abs()
    shift_y = (torch.rand(n, device=device, generator=gen) * 2 - 1) * room * (1 - 1 / h)
    shift_x = (torch.rand(n, device=device, generator=gen) * 2 - 1) * room * (1 - 1 / w)
    return zoom_matrix(factor, shift_y, shift_x)


register("erase", Key("erase", 0.0, 0, 1), help="random erasing of a rectangle, with probability p per image")(
    lambda x, gen, erase: random_erase(x, erase, gen))


# ----------------------------------------------------------------------------- values (any input)
@register("noise", Key("noise", 0.0, 0, 3), stage="values", images_only=False)
def gaussian_noise(x: torch.Tensor, gen: torch.Generator, unit, noise: float) -> torch.Tensor:
    """Gaussian noise of std N in normalised units (N x the data set's std) added to every input value"""
    return x + torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=gen) * (noise * unit)


# ----------------------------------------------------------------------------- mixing (changes the targets)
def sample_beta(alpha: float, n: int, gen: torch.Generator, device) -> torch.Tensor:
    """``n`` draws from Beta(alpha, alpha) on ``device`` from ``gen`` (torch's own Beta takes no generator).

    Beta is G1 / (G1 + G2) for Gamma(alpha) draws; Gammas come from Marsaglia and
    Tsang's method with a fixed number of candidates per draw (each accepted with
    probability >= 0.95, so all fail about once in 10^10 draws and the mode is used),
    which keeps the RNG use fixed and needs no host sync. Works in log space so that
    small alphas (U^(1/alpha) underflows in float32) still give draws near 0 and 1.
    """
    log_g = _log_gamma_draws(alpha, 2 * n, gen, device)
    return torch.sigmoid(log_g[:n] - log_g[n:])


def _log_gamma_draws(alpha: float, n: int, gen: torch.Generator, device, tries: int = 8) -> torch.Tensor:
    shape = alpha + 1 if alpha < 1 else alpha  # Gamma(a) = Gamma(a + 1) * U^(1/a) for a < 1
    d = shape - 1 / 3
    c = 1 / math.sqrt(9 * d)
    z = torch.randn(n, tries, device=device, generator=gen)
    u = torch.rand(n, tries, device=device, generator=gen)
    v = (1 + c * z) ** 3
    log_v = v.clamp_min(1e-30).log()
    ok = (v > 0) & (u.log() < 0.5 * z * z + d - d * v + d * log_v)
    first = ok.float().argmax(1, keepdim=True)  # the first accepted candidate
    log_g = (math.log(d) + log_v).gather(1, first).squeeze(1)
    log_g = torch.where(ok.any(1), log_g, torch.full_like(log_g, math.log(d)))
    if alpha < 1:
        log_g = log_g + torch.rand(n, device=device, generator=gen).clamp_min(1e-30).log() / alpha
    return log_g


@register("mixup", Key("mixup", 0.0, 0, 10), stage="mix", images_only=False)
def mixup(x: torch.Tensor, partner: torch.Tensor, gen: torch.Generator, mixup: float):
    """mixup: each input becomes lam * itself + (1 - lam) * a partner's, lam ~ Beta(a, a) per input"""
    lam = sample_beta(mixup, len(x), gen, x.device)
    weight = lam.view(-1, *([1] * (x.dim() - 1)))
    return torch.lerp(partner, x, weight), lam, torch.ones_like(lam, dtype=torch.bool)


@register("cutmix", Key("cutmix", 0.0, 0, 10), Key("cutmix_prob", 1.0, 0, 1), stage="mix")
def cutmix(x: torch.Tensor, partner: torch.Tensor, gen: torch.Generator, cutmix: float, cutmix_prob: float):
    """cutmix: with probability p an image gets a box from its partner; Beta(a, a) sets the box's area"""
    b, _, h, w = x.shape
    dev = x.device
    side = (1 - sample_beta(cutmix, b, gen, dev)).sqrt()  # box sides as fractions of the image's
    cy = torch.rand(b, device=dev, generator=gen) * h
    cx = torch.rand(b, device=dev, generator=gen) * w
    applied = torch.rand(b, device=dev, generator=gen) < cutmix_prob
    # Pixel-aligned box, clipped at the border: lam is recomputed from the pixels really pasted.
    y0, y1 = (cy - side * h / 2).round().clamp(0, h), (cy + side * h / 2).round().clamp(0, h)
    x0, x1 = (cx - side * w / 2).round().clamp(0, w), (cx + side * w / 2).round().clamp(0, w)
    box = _box_mask(h, w, y0, y1, x0, x1, applied)
    lam = 1 - box.flatten(1).float().mean(1)
    return torch.where(box[:, None], partner, x), lam, applied


@dataclass(frozen=True)
class MixedTargets:
    """Labels of a mixed batch: input ``i`` is ``lam[i]`` of class ``y_a[i]`` and ``1 - lam[i]`` of ``y_b[i]``."""

    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: torch.Tensor

    def soft(self, num_classes: int) -> torch.Tensor:
        """(N, num_classes) probability targets (each row sums to 1)."""
        lam = self.lam[:, None]
        return lam * F.one_hot(self.y_a, num_classes) + (1 - lam) * F.one_hot(self.y_b, num_classes)

    def cross_entropy(self, logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Mean cross-entropy against :meth:`soft` (computed from the two labels, without one-hot)."""
        logits = logits.float()
        ce_a = F.cross_entropy(logits, self.y_a, reduction="none", label_smoothing=label_smoothing)
        ce_b = F.cross_entropy(logits, self.y_b, reduction="none", label_smoothing=label_smoothing)
        return torch.lerp(ce_b, ce_a, self.lam).mean()


# ----------------------------------------------------------------------------- composition
class Augmenter:
    """``augment(x, generator) -> x``: the enabled augmentations, in the registry's order.

    ``x`` is a float batch of ``[0, 1]`` images ``(N, C, H, W)`` or of standardised
    table rows ``(N, F)``. When mixup/cutmix are on (``mixes``), :meth:`mixed_targets`
    gives the labels of the last batch it mixed.
    """

    def __init__(self, steps: list[tuple[Augmentation, dict]], std: float | Sequence[float] = STD):
        self.steps = steps
        self.unit = _stat(std)  # one normalised unit in [0, 1] pixel units, per channel
        self._geometry = _group_affine([s for s in steps if s[0].stage in ("pixels", "affine")])
        self._values = [partial(a.fn, **p) for a, p in steps if a.stage == "values"]
        self._mix = [(a, p) for a, p in steps if a.stage == "mix"]
        self.mixes = bool(self._mix)
        self.last_mix: tuple[torch.Tensor, torch.Tensor] | None = None  # (partner index, lam) of the last batch

    def __repr__(self) -> str:
        return "Augmenter(" + ", ".join(f"{k}={v!r}" for _, p in self.steps for k, v in p.items()) + ")"

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        self.last_mix = None
        image = x.dim() == 4
        if not image:
            _check_applies(self.steps, tuple(x.shape[1:]))
        for op in self._geometry:
            x = op(x, gen)
        unit = self.unit if image else 1.0  # table rows are standardised already
        if isinstance(unit, torch.Tensor) and unit.device != x.device:
            unit = self.unit = unit.to(x.device)  # once, not a copy per batch
        for op in self._values:
            x = op(x, gen, unit)
        return self._mix_batch(x, gen) if self._mix else x

    def _mix_batch(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # One partner per input; later mix steps replace earlier ones where they apply.
        perm = torch.randperm(len(x), device=x.device, generator=gen)
        partner = x[perm]
        out, lam = x, torch.ones(len(x), device=x.device)
        for aug, params in self._mix:
            mixed, step_lam, applied = aug.fn(x, partner, gen, **params)
            out = torch.where(applied.view(-1, *([1] * (x.dim() - 1))), mixed, out)
            lam = torch.where(applied, step_lam, lam)
        self.last_mix = (perm, lam)
        return out

    def mixed_targets(self, yb: torch.Tensor) -> MixedTargets | None:
        """The labels ``yb`` of the last batch as :class:`MixedTargets` (None if it was not mixed)."""
        if self.last_mix is None:
            return None
        perm, lam = self.last_mix
        if len(perm) != len(yb):
            raise ValueError(f"mixed_targets: {len(yb)} labels for a batch of {len(perm)} inputs")
        return MixedTargets(yb, yb[perm], lam)


def _stat(value) -> float | torch.Tensor:
    """A mean/std as a float (one channel) or a (1, C, 1, 1) tensor."""
    if isinstance(value, (int, float)):
        return float(value)
    values = [float(v) for v in value]
    return values[0] if len(values) == 1 else torch.tensor(values).view(1, -1, 1, 1)


class _AffineWarp:
    """Consecutive affine steps as one warp (one interpolation); each still draws its own randomness in order."""

    def __init__(self, parts: list[tuple[Augmentation, dict]]):
        self.parts = parts

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = None
        for aug, params in self.parts:
            m = aug.fn(n, h, w, gen, x.device, **params)
            theta = m if theta is None else theta @ m  # output -> input: the first step's map is applied last
        return affine(x, theta)


def _group_affine(steps: list[tuple[Augmentation, dict]]) -> list[Callable]:
    ops: list[Callable] = []
    for aug, params in steps:
        if aug.stage == "affine" and ops and isinstance(ops[-1], _AffineWarp):
            ops[-1].parts.append((aug, params))
        elif aug.stage == "affine":
            ops.append(_AffineWarp([(aug, params)]))
        else:
            ops.append(partial(aug.fn, **params))
    return ops


def check_applies(settings: Mapping[str, Any], input_shape: Sequence[int]) -> None:
    """Refuse, in one line naming the key, an enabled images-only augmentation for inputs of ``input_shape``
    (``(F,)``: table rows). Callers can run it when the data are loaded, before a run folder exists."""
    _check_applies([(a, a.params(settings)) for a in REGISTRY.values() if a.enabled(settings)], tuple(input_shape))


def _check_applies(steps, input_shape: tuple[int, ...]) -> None:
    """Refuse (one line, naming the key) an images-only augmentation on inputs that are not images."""
    if len(input_shape) >= 2:
        return
    for aug, params in steps:
        if aug.images_only:
            key = aug.keys[0]
            raise NndlError(f"config key '{key.name}' = {params[key.name]!r}: {aug.name} works on images only, and "
                            f"this data set's inputs are rows of {input_shape[0]} numbers; set {key.name}="
                            f"{str(key.default).lower()}")


def augmenter(settings: Mapping[str, Any] | None = None, *, std: float | Sequence[float] = STD,
              input_shape: Sequence[int] | None = None) -> Augmenter | None:
    """The :class:`Augmenter` for ``settings`` (registered config keys -> values), or None when all are off.

    Parameters
    ----------
    settings : mapping
        E.g. ``{"flip": True, "rotate": 10, "mixup": 0.2}``; :func:`options` reads them from a config.
        Values are range-checked; unknown keys are refused.
    std : float or sequence of float
        The data set's std (one value, or one per channel): the unit of ``noise``.
    input_shape : sequence of int, optional
        One input's shape (``(C, H, W)``, or ``(F,)`` for a table row): an images-only
        augmentation on a table is refused here, before training, not at the first batch.
    """
    settings = dict(settings or {})
    known = config_keys()
    for name, value in settings.items():
        if name not in known:
            raise NndlError(f"unknown augmentation setting '{name}': choose from {', '.join(known)}")
        known[name].check(value)
        if known[name].integer:
            settings[name] = int(value)
    steps = [(aug, aug.params(settings)) for aug in REGISTRY.values() if aug.enabled(settings)]
    if input_shape is not None:
        _check_applies(steps, tuple(input_shape))
    return Augmenter(steps, std) if steps else None


class InputTransform:
    """An input transform (``transform(batch, generator or None) -> model input``) that also reports mixing.

    Wraps a transform built by :mod:`nndl.nn.inference` with the :class:`Augmenter`
    inside it (images) or applies the augmenter after it (table rows, whose
    transform has no augmentation hook). ``mixes`` and ``mixed_targets`` are what
    :func:`nndl.training.trainer.train` looks for to use :class:`MixedTargets`.
    """

    def __init__(self, transform: Callable, augment: Augmenter | None, after: bool = False):
        self.transform, self.augment, self.after = transform, augment, after
        self.mixes = bool(augment is not None and augment.mixes)

    def __call__(self, xb: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        if self.augment is not None:
            self.augment.last_mix = None  # an evaluation batch is never mixed
        x = self.transform(xb, gen)
        return self.augment(x, gen) if self.after and self.augment is not None and gen is not None else x

    def mixed_targets(self, yb: torch.Tensor) -> MixedTargets | None:
        return self.augment.mixed_targets(yb) if self.augment is not None else None


def make_transform(flip: bool = False, translate: int = 0, erase: float = 0.0, channels_last: bool = False, *,
                   mean: float | Sequence[float] = MEAN, std: float | Sequence[float] = STD,
                   input_shape: Sequence[int] | None = None, **augmentations) -> InputTransform:
    """The batch transform: uint8 images -> normalised float ``(N, C, H, W)``, augmented in training.

    Parameters
    ----------
    flip, translate, erase, **augmentations
        Settings of the registered augmentations (:data:`REGISTRY`, e.g. ``rotate=10``,
        ``scale=0.1``, ``noise=0.1``, ``mixup=0.2``, ``cutmix=1.0, cutmix_prob=0.5``);
        a strength of 0 / False leaves one out.
    channels_last : bool
        Return image batches in channels-last memory layout.
    mean, std : float or sequence of float
        The data set's normalisation (one value, or one per channel); default Fashion-MNIST's.
    input_shape : sequence of int, optional
        One input's shape; ``(F,)`` makes a transform for standardised table rows
        (``mean``/``std`` per feature), which refuses images-only augmentations.

    Returns
    -------
    InputTransform
        ``transform(batch, generator)`` augments; ``transform(batch, None)`` only normalises.
    """
    from nndl.nn.inference import image_transform, table_transform

    aug = augmenter({"flip": flip, "translate": translate, "erase": erase, **augmentations}, std=std,
                    input_shape=input_shape)
    as_list = lambda v: [float(v)] if isinstance(v, (int, float)) else [float(u) for u in v]  # noqa: E731
    if input_shape is not None and len(input_shape) < 2:
        return InputTransform(table_transform(as_list(mean), as_list(std)), aug, after=True)
    return InputTransform(image_transform(as_list(mean), as_list(std), aug, channels_last), aug)


def images_only_settings() -> dict[str, str]:
    """Every setting of an augmentation that works on images only, with the reason a table run ignores it."""
    return {key.name: f"{aug.name} works on images only (a table run)"
            for aug in REGISTRY.values() if aug.images_only for key in aug.keys}
