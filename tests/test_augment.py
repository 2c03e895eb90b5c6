"""The augmentation registry: each augmentation batched, seeded, in range; mixing and its loss; learning with them."""
import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nndl
from nndl.base import config
from nndl.nn import augment
from nndl.nn.augment import REGISTRY, MixedTargets, affine, augmenter, make_transform, random_flip, rotate, sample_beta, zoom_matrix
from nndl.base.errors import NndlError
from nndl.tasks.classify.config import ClassifyConfig

from conftest import needs_fashion

QUIET = dict(progress=False, echo=lambda s: None, figures=False)
# One setting per augmentation, strong enough to change every batch.
ON = {"flip": {"flip": True}, "translate": {"translate": 2}, "rotate": {"rotate": 15.0}, "scale": {"scale": 0.2},
      "erase": {"erase": 1.0}, "noise": {"noise": 0.2}, "mixup": {"mixup": 0.4},
      "cutmix": {"cutmix": 1.0, "cutmix_prob": 1.0}}


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def images(n=12, c=3, h=17, w=23, seed=0):
    """[0, 1] float images of an odd, non-square size and several channels (nothing assumes 28x28)."""
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- flip/translate/erase unchanged
# Hashes of make_transform's output computed on the code before the registry existed: the presets'
# numbers depend on these being bit-identical (same seed -> same batches).
BEFORE = [({}, "96bde2867245845c", "96bde2867245845c"),
          ({"flip": True}, "b9e7c183aac4a97d", "b28a26497416e627"),
          ({"translate": 2}, "122a5f7e778302e9", "ea67b04acb1c2a64"),
          ({"erase": 0.5}, "208e967eab4fc132", "4f49fe171d23ae61"),
          ({"flip": True, "translate": 2, "erase": 0.25}, "d727ce5a20677843", "ec0ad234d73f7a5d"),
          ({"flip": True, "translate": 2, "erase": 0.25, "channels_last": True},
           "d727ce5a20677843", "ec0ad234d73f7a5d")]


@pytest.mark.parametrize("kwargs,first,second", BEFORE)
def test_existing_augmentations_are_bit_identical_to_before_the_registry(kwargs, first, second):
    raw = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8, generator=gen(123))
    t = make_transform(**kwargs)
    g = gen(7)
    assert (sha(t(raw, g)), sha(t(raw, g))) == (first, second)  # two consecutive batches of one generator
    assert sha(t(raw, None)) == "96bde2867245845c"  # evaluation: normalised only


# ----------------------------------------------------------------------------- the registry and the config
def test_every_registered_key_is_a_config_field_with_the_same_default_and_range():
    fields = {f.name: f for f in dataclasses.fields(ClassifyConfig)}
    keys = augment.config_keys()
    assert list(REGISTRY) == ["flip", "translate", "rotate", "scale", "erase", "noise", "mixup", "cutmix"]
    for name, key in keys.items():
        assert fields[name].default == key.default, name
        assert fields[name].metadata.get("help"), f"{name} has no help text"
        if isinstance(key.default, bool):
            continue
        step = 1 if key.integer else 1e-3
        for ok in (key.low, key.high):
            ClassifyConfig(**{name: type(key.default)(ok)})  # the ends of the range are valid
            augmenter({name: type(key.default)(ok)})
        for bad in (key.low - step, key.high + step):
            with pytest.raises(NndlError, match=f"config key '{name}'"):
                ClassifyConfig(**{name: type(key.default)(bad)})
            with pytest.raises(NndlError, match=f"config key '{name}'"):
                augmenter({name: type(key.default)(bad)})


def test_cli_style_overrides_reach_the_new_keys():
    cfg = config.resolve("classify", "mlp", ["rotate=10", "scale=0.1", "noise=0.05", "mixup=0.2", "cutmix=1",
                                             "cutmix_prob=0.5"])
    assert augment.options(cfg)["rotate"] == 10.0 and augment.options(cfg)["cutmix_prob"] == 0.5
    with pytest.raises(NndlError, match="config key 'rotate' = 200.0: must be in \\[0, 180\\]"):
        config.resolve("classify", "mlp", ["rotate=200"])


def test_unknown_setting_and_all_off():
    with pytest.raises(NndlError, match="unknown augmentation setting 'rotation'"):
        augmenter({"rotation": 10})
    assert augmenter({}) is None and augmenter(augment.options(ClassifyConfig())) is None


# ----------------------------------------------------------------------------- each augmentation
@pytest.mark.parametrize("name", list(ON))
def test_shape_dtype_range_and_seeded_determinism(name):
    x = images()
    aug = augmenter(ON[name])
    out = aug(x, gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    if name == "noise":  # unbounded by design; its size is checked below
        assert torch.isfinite(out).all()
    else:  # flips, shifts, warps with background padding, erasing and mixing stay inside [0, 1]
        assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert torch.equal(out, aug(x, gen(1)))  # same seed -> same batch
    assert not torch.equal(out, aug(x, gen(2)))  # another seed -> another batch
    assert not torch.equal(out, x)
    per_image = (out - x).flatten(1).abs().sum(1) > 0
    if name not in ("flip", "mixup", "cutmix"):  # those may leave an image (or its partner) as it was
        assert per_image.float().mean() > 0.8  # per-image randomness, applied to the whole batch


@pytest.mark.parametrize("name", list(ON))
def test_zero_strength_is_the_identity(name):
    key = REGISTRY[name].keys[0]
    settings = {**ON[name], key.name: key.default}
    assert augmenter(settings) is None  # nothing to run: the batch is passed on untouched
    raw = torch.randint(0, 256, (8, 1, 20, 20), dtype=torch.uint8, generator=gen(3))
    assert torch.equal(make_transform(**settings)(raw, gen(4)), make_transform()(raw, None))


def test_rotation_by_zero_is_the_input_and_right_angles_are_exact():
    x = images(h=15, w=15)
    assert torch.allclose(rotate(x, torch.zeros(len(x))), x, atol=1e-5)
    for k in (1, 2, 3):  # counter-clockwise as displayed, like torch.rot90 from rows towards columns
        assert torch.allclose(rotate(x, torch.full((len(x),), 90.0 * k)), torch.rot90(x, k, (-2, -1)), atol=1e-5)
    wide = images(h=9, w=20)  # non-square: 180 degrees maps pixel centres onto pixel centres too
    assert torch.allclose(rotate(wide, torch.full((len(wide),), 180.0)), wide.flip(-1).flip(-2), atol=1e-5)


def test_random_rotation_stays_within_its_angle():
    # A thin horizontal bar through the centre: its rotated angle, from the second moments, is within +-10 degrees.
    x = torch.zeros(200, 1, 41, 41)
    x[:, :, 20, 5:36] = 1
    out = augmenter({"rotate": 10.0})(x, gen(5))
    ys, xs = torch.meshgrid(torch.arange(41.0) - 20, torch.arange(41.0) - 20, indexing="ij")
    m = out[:, 0]
    mass = m.sum((1, 2))
    cxx = (m * xs * xs).sum((1, 2)) / mass
    cyy = (m * ys * ys).sum((1, 2)) / mass
    cxy = (m * xs * ys).sum((1, 2)) / mass
    angle = torch.rad2deg(0.5 * torch.atan2(2 * cxy, cxx - cyy)).abs()
    assert angle.max() <= 10.5 and angle.max() > 7 and angle.min() < 1  # uniform over the range


def test_zoom_crops_inside_the_image_or_shrinks_into_background():
    n, h, w = 300, 32, 24
    theta = REGISTRY["scale"].fn(n, h, w, gen(6), "cpu", scale=0.3)
    factor = 1 / theta[:, 0, 0]
    assert factor.min() >= 0.7 - 1e-6 and factor.max() <= 1.3 + 1e-6 and factor.std() > 0.1
    out = affine(torch.ones(n, 2, h, w), theta)
    zoom_in = factor > 1
    assert out[zoom_in].min() > 0.999  # a resized crop: the window never leaves the image
    area = out[~zoom_in].mean((1, 2, 3))  # zooming out: the image, factor times its size, covers factor^2
    assert torch.allclose(area, factor[~zoom_in] ** 2, atol=0.03)
    assert torch.allclose(affine(images(), zoom_matrix(torch.ones(12), torch.zeros(12), torch.zeros(12))), images(),
                          atol=1e-5)


def test_flip_twice_is_the_input():
    x = images()
    assert torch.equal(random_flip(random_flip(x, gen(8)), gen(8)), x)


@pytest.mark.parametrize("std", [[0.3530], [0.25, 0.5, 0.1]])
def test_noise_has_its_std_in_normalised_units(std):
    raw = torch.randint(0, 256, (64, len(std), 32, 32), dtype=torch.uint8, generator=gen(9))
    mean = [0.5] * len(std)
    clean = make_transform(mean=mean, std=std)(raw, None)
    noisy = make_transform(noise=0.5, mean=mean, std=std)(raw, gen(10))
    diff = (noisy - clean).transpose(0, 1).flatten(1)  # per channel
    assert torch.allclose(diff.std(1), torch.full((len(std),), 0.5), rtol=0.03)
    assert diff.mean(1).abs().max() < 0.02


# ----------------------------------------------------------------------------- mixing
@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_draws_follow_the_beta_distribution(alpha):
    from scipy import stats

    lam = sample_beta(alpha, 20000, gen(11), "cpu").double()
    assert lam.min() >= 0 and lam.max() <= 1
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)
    # The lower half only: float32 rounds draws within 6e-8 of 1 to exactly 1 (2% of them for a = 0.2), a
    # step in the CDF at 1; near 0 it resolves them. By symmetry the lower half has CDF 2 F(z) on [0, 1/2].
    lower = lam[lam < 0.5].numpy()
    assert len(lower) / len(lam) == pytest.approx(0.5, abs=0.015)
    assert stats.kstest(lower, lambda z: 2 * stats.beta(alpha, alpha).cdf(z)).pvalue > 0.001


def test_mixup_mixes_inputs_and_targets_consistently():
    x = images(n=64)
    aug = augmenter({"mixup": 0.4})
    out = aug(x, gen(12))
    perm, lam = aug.last_mix
    assert lam.min() >= 0 and lam.max() <= 1 and lam.std() > 0.1  # one weight per image
    assert torch.allclose(out, lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[perm], atol=1e-6)
    y = torch.randint(0, 10, (64,), generator=gen(13))
    targets = aug.mixed_targets(y)
    soft = targets.soft(10)
    assert torch.allclose(soft.sum(1), torch.ones(64)) and (soft >= 0).all()
    assert torch.equal(targets.y_a, y) and torch.equal(targets.y_b, y[perm])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixed_cross_entropy_is_cross_entropy_on_the_soft_targets(smoothing):
    logits = torch.randn(50, 7, generator=gen(14)) * 3
    t = MixedTargets(torch.randint(0, 7, (50,), generator=gen(15)), torch.randint(0, 7, (50,), generator=gen(16)),
                     torch.rand(50, generator=gen(17)))
    expected = F.cross_entropy(logits, t.soft(7), label_smoothing=smoothing)
    assert t.cross_entropy(logits, smoothing).item() == pytest.approx(expected.item(), rel=1e-5)
    plain = MixedTargets(t.y_a, t.y_b, torch.ones(50))
    assert plain.cross_entropy(logits).item() == pytest.approx(F.cross_entropy(logits, t.y_a).item(), rel=1e-6)


def test_cutmix_pastes_one_box_whose_area_is_one_minus_lam():
    n, h, w = 64, 19, 26
    x = torch.arange(n, dtype=torch.float32).div(n).view(n, 1, 1, 1).expand(n, 2, h, w).contiguous()
    aug = augmenter({"cutmix": 1.0})
    out = aug(x, gen(18))
    perm, lam = aug.last_mix
    moved = perm != torch.arange(n)
    from_partner = (out[:, 0] == x[perm][:, 0]) & (out[:, 0] != x[:, 0])
    assert torch.allclose(from_partner[moved].flatten(1).float().mean(1), 1 - lam[moved])
    assert ((out == x) | (out == x[perm])).all()  # pixels are copied, never blended
    rows, cols = from_partner.any(2), from_partner.any(1)  # the pasted pixels form one rectangle
    assert torch.equal(from_partner.flatten(1).sum(1), rows.sum(1) * cols.sum(1))
    assert lam.min() >= 0 and lam.max() <= 1 and (lam < 1).float().mean() > 0.8


def test_cutmix_prob_and_cutmix_over_mixup():
    x = images(n=400, c=1, h=12, w=12)
    none = augmenter({"cutmix": 1.0, "cutmix_prob": 0.0})
    assert torch.equal(none(x, gen(19)), x) and (none.last_mix[1] == 1).all()
    both = augmenter({"mixup": 0.4, "cutmix": 1.0, "cutmix_prob": 0.5})
    out = both(x, gen(20))
    perm, lam = both.last_mix
    copied = ((out == x) | (out == x[perm])).flatten(1).all(1)  # cutmix images; mixup ones are blends
    assert 0.4 < copied.float().mean() < 0.6


def test_images_only_augmentations_are_refused_for_tables():
    for name in ("flip", "translate", "rotate", "scale", "erase", "cutmix"):
        assert REGISTRY[name].images_only
        with pytest.raises(NndlError, match=f"config key '{name}' = .*works on images only.*rows of 4 numbers"):
            augmenter(ON[name], input_shape=(4,))
        with pytest.raises(NndlError, match=f"config key '{name}'"):
            augment.check_applies(augment.options(ClassifyConfig(**ON[name])), (4,))
        augment.check_applies(ON[name], (3, 8, 8))  # images: fine
    augment.check_applies({"noise": 0.1, "mixup": 0.2}, (4,))
    table = make_transform(noise=0.1, mixup=0.4, input_shape=(4,), mean=[0.0] * 4, std=[1.0] * 4)
    rows = torch.randn(32, 4, generator=gen(21))
    out = table(rows, gen(22))
    assert out.shape == rows.shape and table.mixes and table.mixed_targets(torch.zeros(32, dtype=torch.long))
    assert torch.equal(table(rows, None), rows)  # evaluation: standardised (here with mean 0, std 1) only


def test_transform_for_builds_from_the_config_and_refuses_image_keys_on_a_table():
    from nndl.tasks.classify.task import transform_for

    cfg = ClassifyConfig(rotate=10.0, mixup=0.2)
    t = transform_for(cfg, torch.device("cpu"))
    raw = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8, generator=gen(23))
    assert t(raw, gen(24)).shape == (16, 1, 28, 28) and t.mixes and t.mixed_targets(torch.zeros(16).long())
    assert t(raw, None) is not None and t.mixed_targets(torch.zeros(16).long()) is None  # evaluation is not mixed
    table = {"input_shape": [4], "mean": [0.0] * 4, "std": [1.0] * 4, "class_names": ["a", "b"]}
    with pytest.raises(NndlError, match="config key 'rotate'"):
        transform_for(cfg, torch.device("cpu"), table)


# ----------------------------------------------------------------------------- in training
def test_training_uses_the_mixed_loss_once_per_step(monkeypatch):
    from nndl.training.trainer import train

    calls = []
    original = MixedTargets.cross_entropy

    def counting(self, logits, label_smoothing=0.0):
        calls.append(label_smoothing)
        return original(self, logits, label_smoothing)

    monkeypatch.setattr(MixedTargets, "cross_entropy", counting)
    x = torch.randint(0, 256, (100, 8, 8), dtype=torch.uint8, generator=gen(25))
    y = torch.randint(0, 3, (100,), generator=gen(26))
    cfg = ClassifyConfig(epochs=2, batch_size=32, label_smoothing=0.1, mixup=0.4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    res = train(model, x, y, cfg, task="classification", transform=make_transform(mixup=0.4), progress=False)
    assert calls == [0.1] * 8 and all(math.isfinite(r["train_loss"]) for r in res.history)
    calls.clear()
    train(model, x, y, cfg, task="classification", transform=make_transform(flip=True), progress=False)
    assert calls == []  # without mixing the loss is the plain one


@needs_fashion
def test_rotate_scale_noise_learn_on_a_real_subset(tmp_path):
    m = nndl.classify("cnn", {"subset": 2000, "epochs": 2, "test_subset": 1000, "rotate": 10.0, "scale": 0.1,
                              "noise": 0.1}, out=tmp_path / "r", **QUIET)
    assert m["test_accuracy"] > 0.6  # chance is 0.10; about 0.69 when measured


@needs_fashion
@pytest.mark.parametrize("preset", ["mlp", "cnn"])
def test_mixup_and_cutmix_fit_without_nan(tmp_path, preset):
    m = nndl.classify(preset, {"subset": 1500, "epochs": 2, "test_subset": 500, "batch_size": 64, "mixup": 0.4,
                               "cutmix": 1.0, "cutmix_prob": 0.5, "label_smoothing": 0.1}, out=tmp_path / "r", **QUIET)
    history = m.history if hasattr(m, "history") else []
    assert all(np.isfinite([r["train_loss"], r["val_loss"]]).all() for r in history)
    assert math.isfinite(m["test_loss"]) and m["test_accuracy"] > 0.5
