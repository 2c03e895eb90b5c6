"""`nndl predict` on images / batches / regression CSVs, and `nndl export` to ONNX and TorchScript."""
import csv
import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import nndl
from nndl.nn.augment import make_transform
from nndl.data.fashion import CLASS_NAMES
from nndl.data.readers import read_idx
from nndl.base.errors import NndlError
from nndl.data.regression_table import bundled_path
from nndl.tools.export import export
from nndl.tools.predict import class_probabilities, load_run, predict, preprocess_image, read_inputs
from nndl.training.trainer import evaluate

from conftest import FASHION_DIR, ROOT, run_cli

TRAIN, TEST = str(bundled_path("regression_train.csv")), str(bundled_path("regression_test.csv"))
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
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
        assert all(t["class"] in CLASS_NAMES for t in r["top"])
    # the same numbers as running the preprocessed array through the model directly
    direct = class_probabilities(load_run(cls_run), preprocess_image(files[0])[None])[0]
    assert results[0]["top"][0]["probability"] == pytest.approx(direct.max(), abs=5e-5)  # 4 decimals


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
        assert [names.index(r["top"][0]["class"]) for r in res] == expected.tolist()
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
    assert [names.index(r["top"][0]["class"]) for r in res_p] == expected.tolist()
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
    assert out[0]["file"] == str(img) and len(out[0]["top"]) == 3


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
    assert list(table[0]) == ["x", "prediction", "fold_mean", "fold_std", "lower", "upper"] and len(table) == 11
    assert all(float(r["lower"]) <= float(r["prediction"]) <= float(r["upper"]) for r in table)  # the 90% interval
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
    assert lines[0].splitlines()[0] == "x,y,prediction,fold_mean,fold_std,lower,upper" and "y" in rows[0]


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
    with pytest.raises(NndlError, match="bad.csv: no column 'x'; the model was trained on the input columns x"):
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


# ----------------------------------------------------------------------------- hardening: inputs that used to mislead
def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width x height`` grey pixels but holds almost no data (a decompression bomb's header)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def one_line_error(proc, *needles):
    """A CLI failure the way users should see it: exit 2, one stderr line naming the problem, no traceback."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nndl: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


def folder_state(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@needs_fashion
@pytest.mark.parametrize("size, needle", [((20000, 20000), "decompression bomb"),  # Pillow refuses it at open
                                          ((10000, 10000), "more than predict's limit"),  # Pillow only warns
                                          ((6400, 6400), "more than predict's limit")])  # Pillow is silent
def test_predict_refuses_huge_images_in_one_line(cls_run, tmp_path, size, needle):
    img = png_header(tmp_path / "huge.png", *size)
    before = folder_state(tmp_path)
    one_line_error(run_cli("predict", cls_run, img), str(img), needle)
    assert folder_state(tmp_path) == before  # nothing written


@needs_fashion
def test_predict_blank_image_is_not_classified(cls_run, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 90), (255, 255, 255)).save(blank)
    faint = tmp_path / "faint.png"  # an 'object' 10 grey levels off the background is no object
    im = Image.new("L", (60, 60), 200)
    ImageDraw.Draw(im).rectangle([20, 20, 40, 40], fill=190)
    im.save(faint)
    shoe = trouser_png(tmp_path / "t.png", (50, 37), (250, 250, 250), (20, 20, 20))
    lines = []
    res = predict(cls_run, [blank, faint, shoe], echo=lines.append)
    out = lines[0].splitlines()
    for r, line in zip(res[:2], out[:2]):
        assert r["top"] == [] and "no object" in r["warning"]
        assert "no object" in line and "%" not in line and not any(c in line for c in CLASS_NAMES)
    assert "warning" not in res[2] and len(res[2]["top"]) == 3 and out[2].count("%") == 3
    # a blank image inside a batch (an all-black IDX image) is flagged the same way
    batch = np.zeros((2, 28, 28), np.uint8)
    batch[1, 5:20, 8:18] = 200
    res = predict(cls_run, [write_idx(tmp_path / "b-idx3-ubyte", batch, gz=False)], echo=None)
    assert res[0]["top"] == [] and "warning" in res[0] and len(res[1]["top"]) == 3


@needs_fashion
@pytest.mark.parametrize("top", ["0", "-2"])
def test_predict_top_must_be_positive(cls_run, tmp_path, top):
    img = trouser_png(tmp_path / "t.png", (50, 37), (250, 250, 250), (20, 20, 20))
    one_line_error(run_cli("predict", cls_run, img, "--top", top), f"--top {top}")
    with pytest.raises(NndlError, match="at least 1"):
        predict(cls_run, [img], top=int(top), echo=None)


@needs_fashion
def test_predict_json_probabilities_are_rounded(cls_run, tmp_path):
    img = trouser_png(tmp_path / "t.png", (50, 37), (250, 250, 250), (20, 20, 20))
    proc = run_cli("predict", cls_run, img, "--json", "--top", "10", check=0)
    probs = [t["probability"] for t in json.loads(proc.stdout)[0]["top"]]
    assert len(probs) == 10 and sum(probs) == pytest.approx(1, abs=1e-3)
    assert all(round(p, 4) == p for p in probs)
    assert not re.search(r"\d\.\d{5,}", proc.stdout)  # no float32 noise in the text


def test_regression_json_round_trips_the_users_values(reg_run, tmp_path):
    values = ["0.1", "-2.25", "0.123456789", "3"]
    inputs = tmp_path / "x.csv"
    inputs.write_text("x\n" + "\n".join(values) + "\n")
    proc = run_cli("predict", reg_run, inputs, "--json", check=0)
    rows = json.loads(proc.stdout)
    assert [r["x"] for r in rows] == [float(v) for v in values]
    assert "0.10000000149" not in proc.stdout and '"x": 0.1,' in proc.stdout
    run = load_run(reg_run)
    with torch.no_grad():
        want = run.model(torch.tensor([[float(v)] for v in values])).ravel().numpy()
    # predictions are the float32 outputs, written as the shortest decimals that read back as them
    assert [np.float32(r["prediction"]) for r in rows] == list(want)
    assert all(len(repr(r["prediction"]).lstrip("-").replace(".", "").lstrip("0")) <= 9 for r in rows)
    csv_text = run_cli("predict", reg_run, inputs, check=0).stdout
    assert csv_text.splitlines()[1].startswith("0.1,") and csv_text.splitlines()[3].startswith("0.123456789,")


@pytest.fixture(scope="module")
def two_input_runs(tmp_path_factory):
    """Two tiny regression runs on a 2-input function: one trained from a CSV with a header, one without."""
    root = tmp_path_factory.mktemp("two-inputs")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (60, 2))
    y = x[:, 0] - 2 * x[:, 1]
    rows = [f"{a:.4f},{b:.4f},{c:.4f}\n" for (a, b), c in zip(x, y)]
    runs = {}
    for name, header in (("named", "temp,pressure,load\n"), ("bare", "")):
        (root / f"{name}-train.csv").write_text(header + "".join(rows[:40]))
        (root / f"{name}-test.csv").write_text(header + "".join(rows[40:]))
        nndl.regress(str(root / f"{name}-train.csv"), str(root / f"{name}-test.csv"),
                     overrides={"epochs": 5, "folds": 2, "hidden": [8]}, out=str(root / name), progress=False,
                     figures=False, echo=quiet)
        runs[name] = root / name
    return runs


def test_regression_predict_reads_columns_by_name(two_input_runs, tmp_path):
    named = two_input_runs["named"]
    assert load_run(named).x_names == ["temp", "pressure"]
    swapped = tmp_path / "swapped.csv"  # the same rows with the columns in another order: read by name
    swapped.write_text("pressure,temp\n0.5,0.25\n-1,1\n")
    straight = tmp_path / "straight.csv"
    straight.write_text("temp,pressure\n0.25,0.5\n1,-1\n")
    a = predict(named, [swapped], echo=None)
    b = predict(named, [straight], echo=None)
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    assert [(r["temp"], r["pressure"]) for r in a] == [(0.25, 0.5), (1.0, -1.0)]
    wrong = tmp_path / "wrong.csv"  # other names, same count: this used to be read by position, silently
    wrong.write_text("t,p\n0.25,0.5\n")
    with pytest.raises(NndlError, match=r"wrong.csv: no column 'temp'; the model was trained on the input columns "
                                        r"temp, pressure \(found t, p\)"):
        predict(named, [wrong], echo=None)
    one_line_error(run_cli("predict", named, wrong), str(wrong), "'temp'")
    bare = tmp_path / "bare.csv"  # several inputs and no names: refused, a swap could not be noticed
    bare.write_text("0.25,0.5\n")
    with pytest.raises(NndlError, match="bare.csv: no header row; the model has 2 inputs"):
        predict(named, [bare], echo=None)


def test_regression_predict_headerless_training_uses_positions(two_input_runs, tmp_path):
    run = two_input_runs["bare"]
    assert load_run(run).x_names == ["col0", "col1"]
    bare = tmp_path / "bare.csv"
    bare.write_text("0.25,0.5\n1,-1\n")
    with_target = tmp_path / "with-target.csv"
    with_target.write_text("0.25,0.5,-0.75\n1,-1,3\n")
    a = predict(run, [bare], echo=None)
    b = predict(run, [with_target], echo=None)
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b] and [r["col2"] for r in b] == [-0.75, 3.0]
    three = tmp_path / "three.csv"
    three.write_text("1,2,3,4\n")
    with pytest.raises(NndlError, match="three.csv: 4 columns; expected the input columns col0, col1"):
        predict(run, [three], echo=None)


@needs_fashion
def test_predict_library_warnings_do_not_precede_the_error(cls_run, tmp_path):
    header_only = tmp_path / "header-only.csv"  # numpy warns "input contained no data" while reading it
    header_only.write_text("a,b\n")
    one_line_error(run_cli("predict", cls_run, header_only), str(header_only), "784 columns")
