"""Classification figures: the confusion-matrix maths, that every figure is a real PNG, model state untouched."""
from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from nndl.figures import classification as cf
from nndl.nn.models import MLP, SmallCNN

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
N = 40


def to_input(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - 0.5).unsqueeze(1)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.arange(N) % 10
    probs = torch.softmax(3 * torch.randn(N, 10, generator=g), 1)
    return images, labels, probs


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return SmallCNN()


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP(784, [32], 10)


def assert_png(path, min_kb: float = 10, min_side: int = 200):
    assert path.exists() and path.suffix == ".png"
    assert path.stat().st_size > min_kb * 1024, f"{path.name} is only {path.stat().st_size} bytes"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert min(img.shape[:2]) >= min_side


def test_confusion_matrix_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    p[:3] = 9  # a class predicted but possibly never true is still counted
    cm = cf.confusion_matrix(t, p, 10)
    assert cm.dtype == np.int64 and cm.shape == (10, 10)
    np.testing.assert_array_equal(cm, metrics.confusion_matrix(t, p, labels=range(10)))
    np.testing.assert_array_equal(cf.confusion_matrix(torch.from_numpy(t), torch.from_numpy(p), 10), cm)
    assert cf.confusion_matrix([], [], 3).sum() == 0
    with pytest.raises(ValueError):
        cf.confusion_matrix([0, 10], [0, 1], 10)


def test_confusion_and_misclassified_pngs(tmp_path, data):
    images, labels, probs = data
    pred = probs.argmax(1)
    assert_png(cf.confusion_matrices(labels, pred, CLASSES, tmp_path / "cm.png"))
    assert_png(cf.misclassified_gallery(images, labels, probs, CLASSES, tmp_path / "mis.png", n=12))
    # probs as numpy, and a prediction set with no error at all, still give a figure
    perfect = np.eye(10)[labels.numpy()]
    assert_png(cf.misclassified_gallery(images, labels, perfect, CLASSES, tmp_path / "none.png"), min_kb=5)


def test_accuracy_curves_png(tmp_path):
    history = [dict(epoch=e, train_loss=1 / e, val_loss=1.2 / e, train_acc=0.5 + e / 20, val_acc=0.45 + e / 20)
               for e in range(1, 6)]
    assert_png(cf.accuracy_curves(history, tmp_path / "acc.png"))
    no_val = [{k: v for k, v in r.items() if not k.startswith("val")} for r in history]
    assert_png(cf.accuracy_curves(no_val, tmp_path / "acc_noval.png"))


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_first_layer_filters_png(tmp_path, kind, request):
    model = request.getfixturevalue(kind)
    assert_png(cf.first_layer_filters(model, tmp_path / "f.png"))


def test_feature_maps(tmp_path, data, cnn, mlp):
    images = data[0]
    cnn.train()
    assert_png(cf.feature_maps(cnn, to_input, images, tmp_path / "fm.png", n_images=2))
    assert cnn.training and all(m.training for m in cnn.modules())  # train mode restored
    assert all(not conv._forward_hooks for _, conv in cf._conv_layers(cnn))  # hooks removed
    with pytest.raises(ValueError):
        cf.feature_maps(mlp, to_input, images, tmp_path / "x.png")


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}, \
        {n: p.requires_grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("target,index", [("class", None), ("channel", (1, 3))])
def test_activation_maximisation_leaves_model_untouched(tmp_path, cnn, target, index):
    cnn.train()
    cnn.head.weight.requires_grad_(False)  # a mixed frozen / trainable model must come back the same
    before, flags = _snapshot(cnn)
    buffers = {n: b.clone() for n, b in cnn.named_buffers()}
    path = cf.activation_maximisation(cnn, to_input, tmp_path / "am.png", target=target, index=index, steps=15,
                                      class_names=CLASSES)
    assert_png(path, min_kb=5)
    after, flags_after = _snapshot(cnn)
    assert flags_after == flags
    for n in before:
        assert torch.equal(before[n], after[n]), n
        assert cnn.get_parameter(n).grad is None
    for n, b in cnn.named_buffers():  # eval mode: BatchNorm running stats unchanged
        assert torch.equal(buffers[n], b), n
    assert cnn.training


def test_maximise_activations_returns_images_that_excite_their_units(cnn):
    """The optimisation alone: one image per unit in [0, 1], scores that rise with the steps."""
    short = cf.maximise_activations(cnn, to_input, "channel", (1, 3), steps=1)
    found = cf.maximise_activations(cnn, to_input, "channel", (1, 3), steps=30)
    assert found.images.shape == (1, 1, 28, 28) and 0 <= found.images.min() and found.images.max() <= 1
    assert found.labels == ["channel 3"] and found.scores.shape == (1,)
    assert found.scores.item() > short.scores.item()  # ascending the channel's mean activation works
    every = cf.maximise_activations(cnn, to_input, steps=2, class_names=CLASSES)
    assert every.images.shape[0] == 10 and every.labels == CLASSES and every.what == "class logit"


def test_activation_maximisation_bad_targets(tmp_path, cnn, mlp):
    with pytest.raises(ValueError):
        cf.activation_maximisation(mlp, to_input, tmp_path / "x.png", target="channel", index=(0, 0), steps=1)
    with pytest.raises(ValueError):
        cf.activation_maximisation(cnn, to_input, tmp_path / "x.png", target="channel", index=(0, 999), steps=1)
    with pytest.raises(ValueError):
        cf.activation_maximisation(cnn, to_input, tmp_path / "x.png", target="neuron", steps=1)
    with pytest.raises(ValueError):
        cf.activation_maximisation(cnn, to_input, tmp_path / "x.png", target="channel", index=7, steps=1)
    with pytest.raises(ValueError):
        cf.activation_maximisation(cnn, to_input, tmp_path / "x.png", target="class", index=10, steps=1)


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_write_classification_figures(tmp_path, data, kind, request):
    model = request.getfixturevalue(kind)
    images, labels, probs = data
    history = [dict(epoch=1, train_loss=2.0, val_loss=2.1, train_acc=0.2, val_acc=0.18),
               dict(epoch=2, train_loss=1.5, val_loss=1.7, train_acc=0.4, val_acc=0.35)]
    paths = cf.write_classification_figures(model, to_input, images, labels, probs, history, CLASSES,
                                            tmp_path / "figures", steps=10)
    expected = ["losses.png", "confusion_matrix.png", "calibration.png", "misclassified.png", "first_layer.png",
                "feature_maps.png", "activation_max.png", "weight_histograms.png"]
    if kind == "mlp":
        expected.remove("feature_maps.png")
    assert [p.name for p in paths] == expected
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(expected)
    for p in paths:
        assert_png(p)


def test_predict_probs_matches_model_and_restores_mode(data, cnn):
    images = data[0]
    cnn.train()
    probs = cf.predict_probs(cnn, to_input, images, batch_size=16)  # probs=None in write_classification_figures
    assert cnn.training
    cnn.eval()
    with torch.no_grad():
        want = torch.softmax(cnn(to_input(images)), 1).numpy()
    np.testing.assert_allclose(probs, want, atol=1e-5)


# ----------------------------------------------------------------------------- what the figures say
class Captured:
    """Stands in for ``save``: keeps each figure open (drawn) so a test can read its axes and labels."""

    def __init__(self):
        self.figures = {}

    def __call__(self, fig, path, tight=True):
        fig.canvas.draw()
        self.figures[Path(path).name] = fig
        return Path(path)


@pytest.fixture
def captured(monkeypatch):
    cap = Captured()
    monkeypatch.setattr(cf, "save", cap)
    yield cap
    import matplotlib.pyplot as plt

    for fig in cap.figures.values():
        plt.close(fig)


def tick_texts(ax, axis="x", minor=True):
    getter = ax.get_xticklabels if axis == "x" else ax.get_yticklabels
    labels = list(getter()) + (list(getter(minor=True)) if minor else [])
    return [t.get_text() for t in labels if t.get_text()]


def test_feature_maps_show_one_image_per_class(tmp_path, data, cnn, captured):
    images, labels, probs = data
    history = [dict(epoch=1, train_loss=2.0, val_loss=2.1, train_acc=0.2, val_acc=0.18)]
    cf.write_classification_figures(cnn, to_input, images, labels, probs, history, CLASSES, tmp_path, steps=2)
    fig = captured.figures["feature_maps.png"]
    # the input column: one labelled image per class, in class order
    inputs = [ax for ax in fig.axes if ax.get_ylabel()]
    assert [ax.get_ylabel() for ax in inputs] == CLASSES
    n_layers = len(cf._conv_layers(cnn))
    assert len(fig.axes) == len(CLASSES) * (1 + n_layers)  # every row: the image + one panel per conv layer
    headers = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert headers[0] == "input" and all(" ch, " in h for h in headers[1:]) and len(headers) == 1 + n_layers


def test_feature_maps_of_a_deep_net_pick_a_few_main_path_layers(tmp_path, data, captured):
    from nndl.nn.models import ResNet

    torch.manual_seed(0)
    net = ResNet([8, 16, 32])
    convs = cf._conv_layers(net)
    assert len(convs) > 4
    cf.feature_maps(net, to_input, data[0][:3], tmp_path / "fm.png", titles=CLASSES[:3])
    headers = [ax.get_title() for ax in captured.figures["fm.png"].axes if " ch, " in ax.get_title()]
    assert len(headers) == 4 and headers[0].startswith(convs[0][0] + ":")
    assert not any("shortcut" in h for h in headers)  # 1x1 residual shortcuts are not what a reader wants


def test_one_epoch_curves_have_a_whole_epoch_axis(tmp_path, captured):
    history = [dict(epoch=1, train_loss=1.8, val_loss=1.5, train_acc=0.5, val_acc=0.73)]
    cf.accuracy_curves(history, tmp_path / "losses.png")
    for ax in captured.figures["losses.png"].axes:
        assert tick_texts(ax, "x") == ["1"]


def test_accuracy_curves_log_loss_ticks_are_plain_numbers(tmp_path, captured):
    history = [dict(epoch=e, train_loss=30 / e ** 1.5, val_loss=32 / e ** 1.4, train_acc=0.5, val_acc=0.5)
               for e in range(1, 41)]
    cf.accuracy_curves(history, tmp_path / "losses.png")
    loss_ax = captured.figures["losses.png"].axes[0]
    assert loss_ax.get_yscale() == "log"
    texts = tick_texts(loss_ax, "y")
    assert texts and not any("10^" in t or "times" in t or "$" in t or "×" in t for t in texts), texts
    assert all(float(t) > 0 for t in texts)  # each one reads as a plain number
