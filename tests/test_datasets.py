"""Every dataset kind end to end (train, report, predict, ONNX export), bad inputs, the one inference path.

Small files are written by the tests (PNG class folders in grey and colour of mixed sizes, an IDX
set, CSV tables); the real data are scikit-learn's bundled ``load_digits`` (1,797 8x8 digits,
written out as PNG folders and as an IDX set) and ``load_iris`` (as a CSV with word labels).
"""
from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nndl
from conftest import FASHION_DIR, run_cli
from nndl import data as datasets
from nndl.base.config import resolve
from nndl.base.errors import NndlError
from nndl.nn.inference import Predictor, image_transform
from nndl.tools.predict import class_probabilities, load_run, predict

sklearn_datasets = pytest.importorskip("sklearn.datasets")
QUIET = {"progress": False, "verbose": False, "echo": lambda s: None}
SRC = Path(__file__).resolve().parents[1] / "src" / "nndl"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Small nets on a shared 2-core machine: one thread each."""


# ----------------------------------------------------------------------------- writers
def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


@pytest.fixture(scope="module")
def digits():
    d = sklearn_datasets.load_digits()
    return (d.images * 16).clip(0, 255).astype(np.uint8), d.target.astype(np.int64)


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory, digits):
    """load_digits as ROOT/CLASS/*.png (8x8 grey PNGs)."""
    root = tmp_path_factory.mktemp("digits_png")
    images, labels = digits
    for i, (img, y) in enumerate(zip(images, labels)):
        write_png(root / f"digit_{y}" / f"{i}.png", img)
    return root


@pytest.fixture(scope="module")
def digits_idx(tmp_path_factory, digits):
    """load_digits as an IDX set with class names in classes.txt (last 297 images are the test set)."""
    root = tmp_path_factory.mktemp("digits_idx")
    images, labels = digits
    for split, sl in (("train", slice(0, 1500)), ("t10k", slice(1500, None))):
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images[sl])
        write_idx(root / f"{split}-labels-idx1-ubyte", labels[sl])
    (root / "classes.txt").write_text("\n".join(["zero", "one", "two", "three", "four", "five", "six", "seven",
                                                  "eight", "nine"]) + "\n")
    return root


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory):
    """load_iris as a CSV with its species names as labels."""
    d = sklearn_datasets.load_iris()
    path = tmp_path_factory.mktemp("iris") / "iris.csv"
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    lines = [",".join(names)] + [",".join(f"{v:g}" for v in row) + f",{d.target_names[t]}"
                                 for row, t in zip(d.data, d.target)]
    path.write_text("\n".join(lines) + "\n")
    return path


COLOURS = {"red": (200, 30, 30), "green": (30, 170, 40), "blue": (30, 40, 200)}


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """Colour photos of three classes in a fixed train/test split, different sizes and formats."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 6)):
        for name, rgb in COLOURS.items():
            for i in range(n):
                h, w = (20, 30) if i % 2 else (41, 37)
                img = np.clip(np.array(rgb) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                suffix = "jpg" if i % 3 == 0 else "png"
                path = root / split / name / f"{i}.{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path)
    return root


# ----------------------------------------------------------------------------- loading
def test_image_folder_colour_grey_and_sizes(tmp_path, colour_folder):
    cfg = resolve("classify", "mlp", {"data": str(colour_folder), "image_size": 16})
    assert datasets.detect(cfg.data) == "image_folder"
    ds = datasets.load(cfg)
    assert ds.input_shape == (3, 16, 16) and ds.class_names == ["blue", "green", "red"]
    assert ds.x_train.shape == (72, 3, 16, 16) and ds.x_train.dtype == torch.uint8
    assert len(ds.y_test) == 18  # the fixed test split is kept, not redrawn
    assert len(ds.mean) == 3 and ds.mean[2] > ds.mean[1]  # blue and red images push the channel means up

    grey = tmp_path / "grey"
    for c, value in (("dark", 40), ("light", 220)):
        for i, size in enumerate([(9, 13), (30, 30), (17, 11), (25, 8), (12, 12)]):
            write_png(grey / c / f"{i}.png", np.full(size, value, np.uint8))
    ds = datasets.load(resolve("classify", "mlp", {"data": str(grey), "image_size": 8, "test_fraction": 0.4}))
    assert ds.input_shape == (1, 8, 8)
    assert sorted(ds.y_test.tolist()) == [0, 0, 1, 1]  # stratified: 2 of 5 per class
    again = datasets.load(resolve("classify", "mlp", {"data": str(grey), "image_size": 8, "test_fraction": 0.4}))
    assert torch.equal(again.x_test, ds.x_test)  # the split is seeded


def test_idx_folder_names_and_fashion_detection(digits_idx, tmp_path):
    assert datasets.detect(str(digits_idx)) == "idx"  # Fashion-MNIST's file names, but not its labels
    if FASHION_DIR.is_dir():
        assert datasets.detect(str(FASHION_DIR)) == "fashion_mnist"
    ds = datasets.load(resolve("classify", "mlp", {"data": str(digits_idx)}))
    assert ds.kind == "idx" and ds.input_shape == (1, 8, 8)
    assert ds.class_names[3] == "three" and len(ds.y_train) == 1500 and len(ds.y_test) == 297
    # EMNIST letters: file prefix, transposed storage, labels 1..K with a mapping file
    em = tmp_path / "emnist"
    em.mkdir()
    img = np.zeros((4, 6, 6), np.uint8)
    img[:, 0, :] = 255  # stored transposed: the top row becomes the left column
    for split in ("train", "test"):
        write_idx(em / f"emnist-letters-{split}-images-idx3-ubyte.gz", img)
        write_idx(em / f"emnist-letters-{split}-labels-idx1-ubyte.gz", np.array([1, 2, 1, 2]))
    (em / "emnist-letters-mapping.txt").write_text("1 65 97\n2 66 98\n")  # label, upper-case code, lower-case code
    ds = datasets.load(resolve("classify", "mlp", {"data": str(em), "val_fraction": 0.0}))
    assert ds.class_names == ["A", "B"] and ds.y_train.tolist() == [0, 1, 0, 1]
    assert ds.x_train[0, 0, :, 0].eq(255).all() and ds.x_train[0, 0, 0, 1:].eq(0).all()


def test_kind_is_detected_from_data():
    assert datasets.detect("") == "fashion_mnist"
    with pytest.raises(NndlError, match="no such file or folder"):
        datasets.detect("/nonexistent/photos")


# ----------------------------------------------------------------------------- end to end
def _onnx_matches_torch(run_dir: Path, inputs: np.ndarray) -> None:
    ort = pytest.importorskip("onnxruntime")
    from nndl.tools.export import export

    path = export(run_dir)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": inputs.astype(np.float32)})[0]
    want = class_probabilities(load_run(run_dir), inputs)
    probs = np.exp(got - got.max(1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(1, keepdims=True), want, atol=1e-5)
    meta = {p.key: p.value for p in __import__("onnx").load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == load_run(run_dir).class_names


CASES = {
    # kind, data fixture, overrides, accuracy it must reach (chance is 0.1 / 0.33)
    "digits_png": ("image_folder", "digits_folder", {"model": "cnn", "image_size": 16, "epochs": 3, "flip": False,
                                                     "lr": 3e-3}, 0.8),
    "digits_idx": ("idx", "digits_idx", {"epochs": 3, "lr": 3e-3, "batch_size": 64}, 0.8),
    "colour_png": ("image_folder", "colour_folder", {"model": "fast", "image_size": 16, "epochs": 4,
                                                     "batch_size": 8, "val_fraction": 0.0}, 0.9),
    "iris_csv": ("csv_table", "iris_csv", {"label_col": "species", "hidden": [32], "dropout": [0.0], "epochs": 40,
                                           "batch_size": 16, "lr": 1e-2}, 0.8),
}


@pytest.mark.parametrize("case", list(CASES))
def test_train_report_predict_export(case, tmp_path, request):
    kind, fixture, overrides, threshold = CASES[case]
    data = request.getfixturevalue(fixture)
    preset = overrides.get("model", "mlp")
    run = nndl.classify(preset, {**overrides, "data": str(data)}, seed=0, out=tmp_path / "run", **QUIET)
    assert run["test_accuracy"] >= threshold, run["test_accuracy"]
    assert (tmp_path / "run" / "report.html").is_file()
    assert (tmp_path / "run" / "figures" / "confusion_matrix.png").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    loaded = load_run(tmp_path / "run")
    assert metrics["dataset"] == kind == loaded.meta["dataset"]
    assert set(metrics["per_class_accuracy"]) <= set(loaded.class_names)
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert {"input_shape", "class_names", "mean", "std", "dataset"} <= set(payload)

    shape = tuple(loaded.meta["input_shape"])
    if kind == "csv_table":
        rows = tmp_path / "rows.csv"
        rows.write_text("petal_width,petal_length,sepal_width,sepal_length\n0.2,1.4,3.5,5.1\n2.3,5.4,3.0,6.2\n")
        out = predict(tmp_path / "run", [rows], echo=None)  # columns read by name, in any order
        assert [r["top"][0]["class"] for r in out] == ["setosa", "virginica"]
        inputs = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 3.0, 5.4, 2.3]])
    else:
        if kind == "idx":
            sample = tmp_path / "seven.png"  # a photo-like input: dark digit on white, larger than 8x8
            big = np.asarray(Image.fromarray(request.getfixturevalue("digits")[0][7]).resize((64, 64)))
            write_png(sample, 255 - big)
        elif case == "colour_png":
            sample = write_png(tmp_path / "photo.png", np.full((50, 70, 3), COLOURS["green"], np.uint8))
        else:
            sample = next((Path(data) / "digit_4").glob("*.png"))
        out = predict(tmp_path / "run", [sample], echo=None)
        assert out[0]["top"][0]["class"] in loaded.class_names
        if kind == "idx":  # an IDX batch of the model's size: one prediction per image
            batch = predict(tmp_path / "run", [Path(data) / "t10k-images-idx3-ubyte.gz"], echo=None)
            assert len(batch) == 297
        if case == "colour_png":  # the model is colour: the photo's colour decides
            assert out[0]["top"][0]["class"] == "green"
        inputs = np.random.default_rng(0).integers(0, 256, (3, *shape)).astype(np.float32)
    _onnx_matches_torch(tmp_path / "run", inputs)


def test_cli_classify_table_with_label_col(tmp_path, iris_csv):
    run_cli("classify", "--data", iris_csv, "--label-col", "species", "--out", tmp_path / "run", "--no-progress",
            "--no-figures", "--set", "epochs=2", "--set", "hidden=16", "--set", "dropout=0", check=0)
    assert load_run(tmp_path / "run").class_names == ["setosa", "versicolor", "virginica"]
    proc = run_cli("predict", tmp_path / "run", iris_csv, "--json", check=0)
    assert len(json.loads(proc.stdout)) == 150
    run_cli("export", tmp_path / "run", check=0)


# ----------------------------------------------------------------------------- bad inputs
def _bad_png_folder(root: Path, problem: str) -> Path:
    for c in ("cat", "dog"):
        for i in range(3):
            write_png(root / c / f"{i}.png", np.full((8, 8), 60 * i, np.uint8))
    if problem == "empty class":
        (root / "bird").mkdir()
        (root / "bird" / "notes.txt").write_text("no images here")
    elif problem == "unreadable":
        (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    elif problem == "one class":
        for f in (root / "dog").iterdir():
            f.unlink()
        (root / "dog").rmdir()
    return root


def _bad_csv(root: Path, problem: str) -> Path:
    path = root / "t.csv"
    text = {"label missing": "a,b,kind\n1,2,x\n3,4,y\n",
            "non-numeric": "a,b,label\n1,2,x\n3,oops,y\n5,6,x\n",
            "one class": "a,b,label\n1,2,x\n3,4,x\n5,6,x\n",
            "no header": "1,2,0\n3,4,1\n"}[problem]
    path.write_text(text)
    return path


def _bad_idx(root: Path, problem: str) -> Path:
    imgs, labels = np.zeros((6, 5, 5), np.uint8), np.array([0, 1, 0, 1, 0, 1])
    write_idx(root / "train-images-idx3-ubyte", imgs)
    write_idx(root / "train-labels-idx1-ubyte", labels if problem != "count" else labels[:4])
    write_idx(root / "t10k-images-idx3-ubyte", imgs if problem != "size" else np.zeros((6, 7, 7), np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte", labels)
    if problem == "classes.txt":
        (root / "classes.txt").write_text("only-one\n")
    return root


BAD = [
    ("image_folder", "empty class", r"bird: class folder without images"),
    ("image_folder", "unreadable", r"broken\.png: not an image Pillow can read"),
    ("image_folder", "one class", r"1 class folder; a classifier needs at least two"),
    ("csv_table", "label missing", r"t\.csv: no column named 'label'.*--label-col"),
    ("csv_table", "non-numeric", r"t\.csv: row 3, column 'b': 'oops' is not a number"),
    ("csv_table", "one class", r"only one class"),
    ("csv_table", "no header", r"t\.csv: no header row"),
    ("idx", "count", r"train-images-idx3-ubyte: 6 images but train-labels-idx1-ubyte has 4 labels"),
    ("idx", "size", r"t10k-images-idx3-ubyte: images of 7x7 pixels, but the training images have 5x5"),
    ("idx", "classes.txt", r"classes\.txt: 1 names, but the labels go up to 1"),
]


@pytest.mark.parametrize("kind,problem,message", BAD, ids=[f"{k}-{p}" for k, p, _ in BAD])
def test_bad_input_is_one_line_before_anything_is_written(kind, problem, message, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = {"image_folder": _bad_png_folder, "csv_table": _bad_csv, "idx": _bad_idx}[kind](src, problem)
    with pytest.raises(NndlError, match=message) as err:
        nndl.classify("mlp", {"data": str(data), "val_fraction": 0.0}, out=tmp_path / "run", **QUIET)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_settings_that_do_not_apply_to_a_table(tmp_path, iris_csv):
    for key, value, message in (("model", "cnn", "only model=mlp reads table rows"),
                                ("tta_flip", True, "mirroring applies to images only")):
        with pytest.raises(NndlError, match=message):
            nndl.classify("mlp", {"data": str(iris_csv), "label_col": "species", key: value},
                          out=tmp_path / "run", **QUIET)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- inference and constants
def test_predictor_tta_flip_is_the_mean_of_image_and_mirror():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.LazyLinear(5))
    images = torch.randint(0, 256, (7, 3, 9, 11), dtype=torch.uint8)
    transform = image_transform([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    model(transform(images, None))  # initialise the lazy layer
    model.train()
    got = Predictor(model, lambda xb: transform(xb, None), tta_flip=True, batch_size=3).logits(images)
    model.eval()
    with torch.no_grad():
        x = transform(images, None)
        want = 0.5 * (model(x) + model(x.flip(-1)))
    torch.testing.assert_close(got, want)
    assert model.training is False  # left as found (eval here) ...
    model.train()
    Predictor(model, lambda xb: transform(xb, None)).logits(images)
    assert model.training and model[1].training  # ... and train mode restored for every submodule


def test_old_model_file_falls_back_to_fashion_mnist(tmp_path):
    from nndl.base import config as config_mod
    from nndl.nn.models import build_classifier
    from nndl.runfolder.files import save_model

    cfg = resolve("classify", "mlp", {"hidden": [8], "dropout": [0.0]})
    save_model(tmp_path / "model.pt", "classify", config_mod.to_dict(cfg), [build_classifier(cfg).state_dict()])
    run = load_run(tmp_path)
    from nndl.data.fashion_mnist import CLASS_NAMES, INPUT_SHAPE

    assert tuple(run.meta["input_shape"]) == INPUT_SHAPE and run.class_names == CLASS_NAMES


FASHION_ONLY = re.compile(r"28\s*[x×*,]\s*28|\b784\b|\b785\b|range\(10\)|num_classes: int = 10\b|0\.2860|0\.3530"
                          r"|T-shirt|Ankle boot")


def test_no_fashion_constants_outside_its_modules():
    """28x28, 10 classes and Fashion-MNIST's normalisation live in its modules only."""
    allowed = {SRC / "data" / "fashion.py", SRC / "data" / "fashion_mnist.py"}
    found = [f"{p.relative_to(SRC)}:{i}: {line.strip()}" for p in sorted(SRC.rglob("*.py")) if p not in allowed
             for i, line in enumerate(p.read_text().splitlines(), 1) if FASHION_ONLY.search(line)]
    assert not found, "Fashion-MNIST constants outside its modules:\n" + "\n".join(found)


def test_config_choices_are_the_registry():
    import dataclasses

    from nndl.tasks.classify.config import ClassifyConfig

    field = next(f for f in dataclasses.fields(ClassifyConfig) if f.name == "dataset")
    assert set(field.metadata["choices"]) == {"auto", *datasets.REGISTRY}
    for name in datasets.REGISTRY:  # every registered module has the interface the rest relies on
        mod = datasets.module(name)
        assert mod.NAME == name and mod.PREDICT_INPUT in ("trimmed", "resized", "table")
        assert set(mod.READS) <= set(datasets.DATASET_SETTINGS)
    for key in datasets.DATASET_SETTINGS:  # every dataset setting is read by some kind, and refused for the others
        assert any(key in datasets.module(name).READS for name in datasets.REGISTRY)
        assert callable(mod.detect) and callable(mod.load)


# ----------------------------------------------------------------------------- deep images: scaled, not clipped
def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG of ``uint16 (H, W)`` grey or ``(H, W, 3)`` RGB values, written chunk by chunk (Pillow
    writes 16-bit grey but not 16-bit RGB PNGs)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = array.shape[:2]
    colour_type = 2 if array.ndim == 3 else 0
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def write_float_tiff(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.float32)).save(path)
    return path


# form -> (file name, writer of the 8-bit image in that form)
DEEP_FORMS = {
    "16-bit grey PNG": ("x.png", lambda p, a: write_png16(p, a.astype(np.uint16) * 257)),
    "16-bit RGB PNG": ("x.png", lambda p, a: write_png16(p, np.stack([a.astype(np.uint16) * 257] * 3, -1))),
    "16-bit grey TIFF": ("x.tif", lambda p, a: write_png(p, a.astype(np.uint16) * 257)),
    "float TIFF (0..1)": ("x.tif", lambda p, a: write_float_tiff(p, a / 255.0)),
}


def _deep_folder(root: Path, digits, form: str | None, n: int = 12) -> Path:
    """Digits 0 and 1 as ROOT/CLASS/*, 8-bit PNGs (form None) or in one of the DEEP_FORMS."""
    images, labels = digits
    for c in (0, 1):
        for i in np.flatnonzero(labels == c)[:n]:
            if form is None:
                write_png(root / f"digit_{c}" / f"{i}.png", images[i])
            else:
                name, writer = DEEP_FORMS[form]
                writer(root / f"digit_{c}" / f"{i}{Path(name).suffix}", images[i])
    return root


@pytest.mark.parametrize("form", list(DEEP_FORMS))
def test_deep_images_train_as_their_8_bit_version(form, tmp_path, digits):
    """A 16-bit or float image decodes to its 8-bit version (within 1 grey level), not to a clipped one."""
    from nndl.data.image_folder import open_image, to_array

    images, _ = digits
    name, writer = DEEP_FORMS[form]
    path = writer(tmp_path / name, images[5])
    grey = to_array(open_image(path), 1, (8, 8))[0].astype(int)
    assert np.abs(grey - images[5]).max() <= 1, (grey.mean(), images[5].mean())
    cfg = {"image_size": 8, "test_fraction": 0.25}
    deep = datasets.load(resolve("classify", "mlp", {"data": str(_deep_folder(tmp_path / "deep", digits, form)),
                                                     **cfg}))
    plain = datasets.load(resolve("classify", "mlp", {"data": str(_deep_folder(tmp_path / "plain", digits, None)),
                                                      **cfg}))
    channels = 3 if "RGB" in form else 1  # an RGB file makes a colour set, whatever its colours
    assert deep.input_shape == (channels, 8, 8) and plain.input_shape == (1, 8, 8)
    assert (deep.x_train.int() - plain.x_train.int()).abs().max() <= 1  # each channel against the grey one
    assert deep.mean == pytest.approx(plain.mean * channels, abs=1 / 255)


@pytest.fixture(scope="module")
def digit_runs(tmp_path_factory, digits):
    """Small models on 8-bit digits 0/1: an image-folder one (predict resizes) and an IDX one (predict trims)."""
    root = tmp_path_factory.mktemp("digit_runs")
    folder = _deep_folder(root / "png", digits, None, n=40)
    images, labels = digits
    keep = np.flatnonzero(labels < 2)
    idx = root / "idx"
    idx.mkdir()
    for split, sl in (("train", slice(0, 300)), ("t10k", slice(300, None))):
        write_idx(idx / f"{split}-images-idx3-ubyte", images[keep][sl])
        write_idx(idx / f"{split}-labels-idx1-ubyte", labels[keep][sl])
    settings = {"epochs": 2, "hidden": [16], "dropout": [0.0], "batch_size": 32}
    nndl.classify("mlp", {**settings, "data": str(folder), "image_size": 8}, out=root / "folder_run", figures=False,
                  **QUIET)
    nndl.classify("mlp", {**settings, "data": str(idx)}, out=root / "idx_run", figures=False, **QUIET)
    return {"resized": root / "folder_run", "trimmed": root / "idx_run"}


@pytest.mark.parametrize("style", ["resized", "trimmed"])
@pytest.mark.parametrize("form", list(DEEP_FORMS))
def test_deep_images_predict_as_their_8_bit_version(form, style, digit_runs, tmp_path, digits):
    images, _ = digits
    photo = np.asarray(Image.fromarray(255 - images[3]).resize((40, 40), Image.NEAREST))  # dark digit on white
    name, writer = DEEP_FORMS[form]
    plain = predict(digit_runs[style], [write_png(tmp_path / "plain.png", photo)], echo=None, top=2)
    deep = predict(digit_runs[style], [writer(tmp_path / name, photo)], echo=None, top=2)
    assert [t["class"] for t in deep[0]["top"]] == [t["class"] for t in plain[0]["top"]]
    for a, b in zip(deep[0]["top"], plain[0]["top"]):
        assert a["probability"] == pytest.approx(b["probability"], abs=2e-3)


UNREADABLE_PIXELS = {
    "32-bit integer TIFF": (lambda p: Image.fromarray(np.full((8, 8), 70000, np.int32)).save(p),
                            "32-bit integer pixels"),
    "float TIFF in 0..255": (lambda p: write_float_tiff(p, np.full((8, 8), 200.0)), "float pixels from 200 to 200"),
    "float TIFF with NaN": (lambda p: write_float_tiff(p, np.full((8, 8), np.nan)), "float pixels from nan"),
}


@pytest.mark.parametrize("case", list(UNREADABLE_PIXELS))
def test_pixels_without_a_scale_are_refused_in_training(case, tmp_path, digits):
    folder = _deep_folder(tmp_path / "data", digits, None, n=4)
    writer, message = UNREADABLE_PIXELS[case]
    writer(folder / "digit_1" / "odd.tif")
    with pytest.raises(NndlError, match=re.escape(message)) as err:
        nndl.classify("mlp", {"data": str(folder), "image_size": 8}, out=tmp_path / "run", **QUIET)
    assert "odd.tif" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()
