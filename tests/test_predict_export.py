"""`nndl predict` on images / batches / regression CSVs, and `nndl export` to ONNX and TorchScript."""
import csv
import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import nndl
from nndl.data.augment import make_transform
from nndl.data.fashion import CLASS_NAMES, read_idx
from nndl.errors import NndlError
from nndl.export import export
from nndl.predict import class_probabilities, load_run, predict, preprocess_image, read_inputs
from nndl.training import evaluate

from conftest import FASHION_DIR, ROOT, run_cli

TRAIN, TEST = str(ROOT / "data/regression/train.csv"), str(ROOT / "data/regression/test.csv")
HAVE_FASHION = (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists()
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason="Fashion-MNIST Debian package (dataset-fashion-mnist) "
                                                            "not installed at /usr/share/datasets/fashion-mnist")
quiet = lambda s: None  # noqa: E731


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def test_images():
    if not HAVE_FASHION:
        pytest.skip("Fashion-MNIST not installed")
    return (read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[:200],
            read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")[:200])


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    if not HAVE_FASHION:
        pytest.skip("Fashion-MNIST not installed")
    out = tmp_path_factory.mktemp("predict") / "cls"
    # tta_flip: the exported graphs must reproduce the mirror averaging too
    nndl.classify(overrides={"subset": 1500, "epochs": 1, "test_subset": 500, "model": "cnn", "tta_flip": True},
                  out=str(out), progress=False, figures=False, echo=quiet)
    return out


@pytest.fixture(scope="module")
def reg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "reg"
    nndl.regress(TRAIN, TEST, overrides={"epochs": 20}, out=str(out), progress=False, figures=False, echo=quiet)
    return out


@pytest.fixture(scope="module")
def reg_ens_run(tmp_path_factory):
    """Standardised inputs and a fold-ensemble final model: the buffers and the averaging must survive."""
    out = tmp_path_factory.mktemp("predict") / "reg-ens"
    nndl.regress(TRAIN, TEST, overrides={"epochs": 20, "standardize": True, "final": "ensemble", "folds": 3},
                 out=str(out), progress=False, figures=False, echo=quiet)
    return out


def write_idx(path: Path, images: np.ndarray, gz: bool) -> Path:
    data = struct.pack(">BBBB", 0, 0, 8, images.ndim) + struct.pack(f">{images.ndim}I", *images.shape)
    data += images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def trouser_png(path: Path, size, background, fill, mode="RGB") -> Path:
    """A clear single object: two bright/dark 'legs' joined at the top, on a plain background."""
    w, h = size
    im = Image.new(mode, size, background)
    d = ImageDraw.Draw(im)
    d.rectangle([int(0.35 * w), int(0.1 * h), int(0.65 * w), int(0.3 * h)], fill=fill)
    d.rectangle([int(0.35 * w), int(0.1 * h), int(0.47 * w), int(0.9 * h)], fill=fill)
    d.rectangle([int(0.53 * w), int(0.1 * h), int(0.65 * w), int(0.9 * h)], fill=fill)
    im.save(path)
    return path


def reference_logits(run_dir, images: np.ndarray) -> np.ndarray:
    """Logits exactly as nndl's evaluation computes them (normalise, model, mirror average)."""
    run = load_run(run_dir)
    res = evaluate(run.model, torch.as_tensor(images), torch.zeros(len(images), dtype=torch.long), "classification",
                   transform=make_transform(), tta_flip=run.cfg.tta_flip)
    return res["outputs"].numpy()


# ----------------------------------------------------------------------------- image preprocessing
@pytest.mark.parametrize("size,background,fill,mode", [
    ((50, 37), (10, 20, 30), (230, 220, 200), "RGB"),  # dark background, odd size, colour
    ((37, 50), (250, 250, 245), (40, 40, 60), "RGB"),  # light background: must be inverted
    ((300, 120), 255, 0, "L"),  # wide canvas, grayscale, white paper
    ((64, 64), (0, 0, 0, 0), (90, 60, 30, 255), "RGBA"),  # transparent background: flattened onto white
])
def test_preprocess_polarity_and_shape(tmp_path, size, background, fill, mode):
    # a tall rectangle (a trouser-like blob) somewhere off-centre
    w, h = size
    im = Image.new(mode, size, background)
    ImageDraw.Draw(im).rectangle([int(0.2 * w), int(0.3 * h), int(0.2 * w) + max(3, int(0.1 * w)),
                                  int(0.3 * h) + int(0.6 * h)], fill=fill)
    path = tmp_path / "x.png"
    im.save(path)
    arr = preprocess_image(path)
    assert arr.shape == (28, 28) and arr.dtype == np.uint8
    # dark background left and right (the padding of a tall object), light object in the middle
    assert arr[:, :3].max() < 10 and arr[:, -3:].max() < 10, arr
    assert arr[4:24, 13:15].min() > 200, arr
    rows = np.flatnonzero((arr > 128).any(1))
    assert rows[0] <= 1 and rows[-1] >= 26  # trimmed: the taller side spans the frame, as in the dataset


@needs_fashion
def test_preprocess_recovers_dataset_images(tmp_path, test_images):
    """A dataset image blown up 4x, inverted to dark-on-white and saved as RGB comes back close to itself."""
    images, _ = test_images
    corr = []
    for i, a in enumerate(images[:8]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(255 - a).resize((112, 112), Image.NEAREST).convert("RGB").save(p)
        corr.append(np.corrcoef(preprocess_image(p).ravel().astype(float), a.ravel().astype(float))[0, 1])
    assert np.median(corr) > 0.85, corr


# ----------------------------------------------------------------------------- classification predict
@needs_fashion
def test_predict_images_top3(cls_run, tmp_path):
    files = [trouser_png(tmp_path / "dark.png", (50, 37), (10, 20, 30), (230, 220, 200)),
             trouser_png(tmp_path / "light.jpg", (37, 50), (250, 250, 245), (40, 40, 60))]
    lines = []
    results = predict(cls_run, files, echo=lines.append)
    assert len(results) == 2 and len(lines) == 1 and lines[0].count("%") == 6
    for r, f in zip(results, files):
        assert r["file"] == str(f) and r["index"] == 0
        probs = [t["probability"] for t in r["top3"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
        assert all(t["class"] in CLASS_NAMES for t in r["top3"])
    # the same numbers as running the preprocessed array through the model directly
    direct = class_probabilities(load_run(cls_run), preprocess_image(files[0])[None])[0]
    assert results[0]["top3"][0]["probability"] == pytest.approx(direct.max(), abs=1e-6)


@needs_fashion
def test_predict_idx_and_csv_batches(cls_run, tmp_path, test_images):
    images, labels = test_images
    images, labels = images[:20], labels[:20]
    expected = reference_logits(cls_run, images).argmax(1)
    names = list(CLASS_NAMES)
    for path in (write_idx(tmp_path / "batch-idx3-ubyte", images, gz=False),
                 write_idx(tmp_path / "batch-idx3-ubyte.gz", images, gz=True)):
        res = predict(cls_run, [path], echo=None)
        assert [r["index"] for r in res] == list(range(20))
        assert [names.index(r["top3"][0]["class"]) for r in res] == expected.tolist()
    # Kaggle CSV form (with labels) and plain 784-column CSV (no header, no labels)
    kaggle = tmp_path / "kaggle.csv"
    rows = np.concatenate([labels[:, None], images.reshape(20, -1)], 1)
    kaggle.write_text("label," + ",".join(f"pixel{i}" for i in range(1, 785)) + "\n" +
                      "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(",".join(map(str, r)) for r in images.reshape(20, -1)) + "\n")
    res_k = predict(cls_run, [kaggle], json=True, echo=None)
    res_p = predict(cls_run, [plain], echo=None)
    assert [r["label"] for r in res_k] == [names[i] for i in labels]
    assert [names.index(r["top3"][0]["class"]) for r in res_p] == expected.tolist()
    assert "label" not in res_p[0]


@needs_fashion
def test_predict_bad_inputs(cls_run, tmp_path):
    labels = write_idx(tmp_path / "labels-idx1-ubyte", np.arange(5, dtype=np.uint8), gz=False)
    with pytest.raises(NndlError, match="labels file"):
        predict(cls_run, [labels], echo=None)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(NndlError, match="784 columns"):
        predict(cls_run, [bad_csv], echo=None)
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    with pytest.raises(NndlError, match="not an image"):
        predict(cls_run, [not_image], echo=None)
    with pytest.raises(NndlError, match="no such file"):
        predict(cls_run, [tmp_path / "missing.png"], echo=None)


@needs_fashion
def test_cli_predict_json(cls_run, tmp_path):
    img = trouser_png(tmp_path / "t.png", (50, 37), (250, 250, 250), (20, 20, 20))
    proc = run_cli("predict", cls_run, img, "--json", check=0)
    out = json.loads(proc.stdout)
    assert out[0]["file"] == str(img) and len(out[0]["top3"]) == 3


# ----------------------------------------------------------------------------- regression predict
def test_regression_predict_csv(reg_run, tmp_path):
    run = load_run(reg_run)
    x = np.linspace(-5, 5, 11, dtype=np.float32)
    inputs_only = tmp_path / "x.csv"
    inputs_only.write_text("x\n" + "\n".join(f"{v}" for v in x) + "\n")
    out = tmp_path / "pred.csv"
    rows = predict(reg_run, [inputs_only], out=out, echo=None)
    with open(out, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["x", "prediction", "fold_mean", "fold_std"] and len(table) == 11
    with torch.no_grad():
        want = run.model(torch.as_tensor(x[:, None])).numpy().ravel()
        folds = torch.stack([m(torch.as_tensor(x[:, None])).ravel() for m in run.fold_models]).numpy()
    np.testing.assert_allclose([r["prediction"] for r in rows], want, atol=1e-6)
    np.testing.assert_allclose([float(r["fold_mean"]) for r in table], folds.mean(0), atol=1e-5)
    np.testing.assert_allclose([float(r["fold_std"]) for r in table], folds.std(0), atol=1e-5)
    assert len(run.fold_models) == 5 and all(r["fold_std"] >= 0 for r in rows)
    # a header-less one-column file, and the training layout (target kept in the output)
    bare = tmp_path / "bare.csv"
    bare.write_text("\n".join(f"{v}" for v in x) + "\n")
    assert [r["prediction"] for r in predict(reg_run, [bare], echo=None)] == pytest.approx(want, abs=1e-6)
    lines = []
    rows = predict(reg_run, [TEST], echo=lines.append)
    assert lines[0].splitlines()[0] == "x,y,prediction,fold_mean,fold_std" and "y" in rows[0]


def test_regression_standardized_ensemble(reg_ens_run, tmp_path):
    run = load_run(reg_ens_run)
    assert len(run.model.members) == 3 and run.cfg.standardize
    x, _ = read_inputs(TEST, run.x_names, run.y_name)
    rows = predict(reg_ens_run, [TEST], echo=None)
    # the ensemble is the mean of the fold models
    np.testing.assert_allclose([r["prediction"] for r in rows], [r["fold_mean"] for r in rows], atol=1e-5)
    # and reproduces the test MSE the run reported
    metrics = json.loads((reg_ens_run / "metrics.json").read_text())
    mse = np.mean([(r["prediction"] - r["y"]) ** 2 for r in rows])
    assert mse == pytest.approx(metrics["test_mse"], rel=1e-4)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(NndlError, match="expected the input columns x"):
        predict(reg_ens_run, [bad], echo=None)


# ----------------------------------------------------------------------------- export
@needs_fashion
def test_onnx_matches_onnxruntime(cls_run, tmp_path, test_images):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    images, _ = test_images
    path = export(cls_run, "onnx", out=tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == list(CLASS_NAMES)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    ref = reference_logits(cls_run, images)
    for n in (1, 37, 200):  # dynamic batch size
        got = sess.run(None, {"input": images[:n, None].astype(np.float32)})[0]
        assert got.shape == (n, 10)
        assert np.abs(got - ref[:n]).max() <= 1e-4


def test_onnx_regression(reg_ens_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = export(reg_ens_run, "onnx", out=tmp_path / "r.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    run = load_run(reg_ens_run)
    for n in (3, 50):
        x = np.linspace(-5, 5, n, dtype=np.float32)[:, None]
        with torch.no_grad():
            want = run.model(torch.as_tensor(x)).numpy()
        assert np.abs(sess.run(None, {"input": x})[0] - want).max() <= 1e-4


@needs_fashion
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load: deprecated upstream, still the format
def test_torchscript_round_trip(cls_run, tmp_path, test_images):
    images, _ = test_images
    path = export(cls_run, "torchscript", out=tmp_path / "m.pt")
    extra = {"nndl.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["nndl.json"])["task"] == "classify"
    ref = reference_logits(cls_run, images)
    for n in (1, 64):
        with torch.no_grad():
            got = loaded(torch.as_tensor(images[:n, None]).float()).numpy()
        np.testing.assert_allclose(got, ref[:n], atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_regression_default_path(reg_run):
    path = export(reg_run, "torchscript")
    assert path == reg_run / "model.torchscript.pt"
    loaded = torch.jit.load(str(path))
    x = torch.linspace(-5, 5, 9)[:, None]
    with torch.no_grad():
        assert torch.allclose(loaded(x), load_run(reg_run).model(x), atol=1e-6)


# ----------------------------------------------------------------------------- bad checkpoints
def test_bad_checkpoints(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "model.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    plain = tmp_path / "plain"
    plain.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(3)}, "config": {}}, plain / "model.pt")
    for folder, msg in ((junk, "not a loadable nndl checkpoint"), (plain, "not an nndl checkpoint")):
        with pytest.raises(NndlError, match=msg):
            predict(folder, [TRAIN], echo=None)
        with pytest.raises(NndlError, match=msg):
            export(folder, "onnx")
    with pytest.raises(NndlError, match="choose one of"):
        export(plain, "tflite")
    proc = run_cli("export", junk, "--format", "onnx", check=2)
    assert proc.stderr.startswith("nndl: error:") and "not a loadable nndl checkpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
