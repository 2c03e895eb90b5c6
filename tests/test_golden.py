"""Golden runs: what nndl writes and prints for a fixed set of runs, recorded once and compared exactly.

A refactor must not move a single number. Each scenario below runs nndl through its public
surfaces only (the ``nndl`` command via :func:`nndl.cli.main`, ``nndl.classify``/``nndl.regress``,
``nndl.tools.sklearn``), on CPU with one thread and deterministic algorithms, and reduces what it
produced to a *fingerprint*:

- ``metrics.json``, ``config.json``, ``study.json``: every value, floats as ``float.hex`` (exact);
- ``history.csv``, ``trials.csv``: the text, row by row;
- ``model.pt`` / ``checkpoint.pt``: a SHA-256 of every tensor (with dtype and shape) and the other
  metadata exactly;
- ``figures/*.png``: names and pixel sizes;
- ``report.html``: a token stream of its text and a hash of each embedded image, so template
  whitespace and markup do not count but any changed number, caption or order does;
- printed predictions and exported-model outputs on fixed inputs, exactly.

Wall-clock values (seconds, dates, durations), temporary paths and the environment section are
masked. The fingerprints live in ``tests/golden/NAME.json``. A change that moves a number on
purpose re-records them and says why in its commit message::

    NNDL_GOLDEN_RECORD=1 .venv/bin/python -m pytest tests/test_golden.py

Recording runs every scenario twice and refuses to write a fingerprint that differs between the
two runs (a value that is not deterministic must be masked here, not recorded).

Exact floats hold for one set of CPU kernels: torch picks vectorised kernels (AVX2, AVX-512 ...) by
the processor, and their last bits differ. ``tests/golden/MACHINE.json`` names the kernel set the
files were recorded with; on another one the comparison is skipped with that reason (record on the
machine CI runs on).
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import math
import os
import re
import struct
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch

from conftest import FASHION_DIR, ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

GOLDEN = Path(__file__).parent / "golden"
RECORD = os.environ.get("NNDL_GOLDEN_RECORD") == "1"
HAVE_FASHION = (FASHION_DIR / "train-images-idx3-ubyte.gz").exists()

# Keys and columns whose values are wall-clock measurements (or derived from them).
VOLATILE_KEY = re.compile(r"seconds|datetime|duration|^finished$|^started$|^train_time$")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?")
DURATION = re.compile(r"\b\d+(\.\d+)?(e[-+]?\d+)?\s?(s|ms|min)\b")
STAMPED_DIR = re.compile(r"\b(regress|classify|tune-\w+|lr-find-\w+)-\d{8}-\d{6}(-\d+)?\b")


# ------------------------------------------------------------------ fingerprints
class Masker:
    """Replaces the scenario's temporary folder and the checkout's path by fixed names."""

    def __init__(self, tmp: Path):
        self.subs = [(str(tmp.resolve()), "<TMP>"), (str(tmp), "<TMP>"), (str(ROOT), "<ROOT>")]

    def text(self, s: str) -> str:
        for old, new in self.subs:
            s = s.replace(old, new)
        return STAMPED_DIR.sub(r"\1-<STAMP>", s)


def exact(value: Any, masker: Masker, key: str = "") -> Any:
    """A JSON value with floats as hex strings, wall-clock keys masked, paths made relative."""
    if key and VOLATILE_KEY.search(key):
        return "<MASKED>"
    if isinstance(value, dict):
        return {str(k): exact(v, masker, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [exact(v, masker) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value.hex() if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return DATE.sub("<DATE>", masker.text(value))
    return repr(value)


def csv_rows(path: Path, masker: Masker) -> list[dict]:
    """A CSV file as its rows (text cells), wall-clock columns masked."""
    with open(path, newline="") as fh:
        return [{k: ("<MASKED>" if VOLATILE_KEY.search(k) else masker.text(v)) for k, v in row.items()}
                for row in csv.DictReader(fh)]


def tensor_digest(t: torch.Tensor) -> str:
    shape = list(t.shape)
    t = t.detach().cpu().contiguous().reshape(-1)
    return f"{t.dtype}{shape}:{hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()[:24]}" \
        if t.numel() else f"{t.dtype}{shape}"


def torch_file(path: Path, masker: Masker) -> Any:
    """Every tensor of a torch file hashed, every other value exact."""
    def walk(obj: Any, key: str = "") -> Any:
        if isinstance(obj, torch.Tensor):
            return tensor_digest(obj)
        if isinstance(obj, dict):
            return {str(k): walk(v, str(k)) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [walk(v) for v in obj]
        return exact(obj, masker, key)

    return walk(torch.load(path, map_location="cpu", weights_only=True))


def png_size(path: Path) -> list[int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return list(struct.unpack(">II", header[16:24]))


class ReportTokens(HTMLParser):
    """The text of a report page in reading order, images as hashes, wall-clock cells masked.

    Tables are read row by row so a wall-clock *column* (``seconds``) or *row* (a metrics table's
    ``cv_seconds`` key) can be masked wherever the template puts it. The Environment section
    (versions, commit, command line) is left out.
    """

    def __init__(self, masker: Masker):
        super().__init__(convert_charrefs=True)
        self.masker, self.tokens = masker, []
        self.heading: str | None = None  # text of the current h2 (the section)
        self.in_h2 = False
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.header: list[str] = []
        self.skip_depth = 0  # inside <style>/<script>

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script"):
            self.skip_depth += 1
        elif tag == "h2":
            self.in_h2, self.heading = True, ""
        elif tag == "table":
            self.header = []
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif tag == "img":
            src = dict(attrs).get("src") or ""
            if src.startswith("data:"):
                data = src.split(",", 1)[1].encode()
                self._emit(f"<img {hashlib.sha256(data).hexdigest()[:24]}>")
            else:
                self._emit(f"<img {self.masker.text(src)}>")

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self.skip_depth -= 1
        elif tag == "h2":
            self.in_h2 = False
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(" ".join(" ".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            row, self.row = self.row, None
            if not self.header:
                self.header = row
            else:
                row = self._mask_row(row)
            for cell in row:
                self._emit(cell)

    def _mask_row(self, row: list[str]) -> list[str]:
        if row and VOLATILE_KEY.search(row[0]):  # a key/value table: the key names a wall-clock value
            return [row[0]] + ["<MASKED>"] * (len(row) - 1)
        return [("<MASKED>" if i < len(self.header) and VOLATILE_KEY.search(self.header[i]) else c)
                for i, c in enumerate(row)]

    def handle_data(self, data):
        if self.skip_depth:
            return
        text = " ".join(data.split())
        if not text:
            return
        if self.in_h2:
            self.heading = (self.heading or "") + text
        if self.cell is not None:
            self.cell.append(text)
        else:
            self._emit(text)

    def _emit(self, text: str) -> None:
        if self.heading == "Environment" or not text:
            return
        text = DURATION.sub("<DUR>", DATE.sub("<DATE>", self.masker.text(text)))
        self.tokens.append(text)


def report_tokens(path: Path, masker: Masker) -> list[str]:
    parser = ReportTokens(masker)
    parser.feed(path.read_text())
    return parser.tokens


def folder_fingerprint(folder: Path, masker: Masker) -> dict[str, Any]:
    """Everything a run or study folder holds, reduced as the module docstring says."""
    out: dict[str, Any] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(folder))
        if path.name in ("environment.json", ".nndl-run") or rel.startswith("tensorboard"):
            out[rel] = "<present>"
        elif path.suffix == ".json":
            out[rel] = exact(json.loads(path.read_text()), masker)
        elif path.suffix == ".csv":
            out[rel] = csv_rows(path, masker)
        elif path.suffix == ".pt":
            out[rel] = torch_file(path, masker)
        elif path.suffix == ".png":
            out[rel] = {"png": png_size(path)}
        elif path.suffix == ".html":
            out[rel] = report_tokens(path, masker)
        elif path.suffix == ".toml":
            out[rel] = exact(tomllib.loads(path.read_text()), masker)
        elif path.name == "journal.log":
            out[rel] = "<present>"  # Optuna's own log: timestamps throughout; trials.csv holds its content
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()[:24]
    return out


def differences(expected: Any, actual: Any, where: str = "") -> Iterator[str]:
    """Every place where two fingerprints differ, in words, in a stable order."""
    if type(expected) is not type(actual):
        yield f"{where or '/'}: {str(expected)[:200]} != {str(actual)[:200]}"
    elif isinstance(expected, dict):
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                yield f"{where}/{key}: missing now"
            elif key not in expected:
                yield f"{where}/{key}: new (not in the golden file)"
            else:
                yield from differences(expected[key], actual[key], f"{where}/{key}")
    elif isinstance(expected, list):
        for i, (a, b) in enumerate(zip(expected, actual)):
            yield from differences(a, b, f"{where}[{i}]")
        if len(expected) != len(actual):
            yield f"{where}: {len(expected)} items recorded, {len(actual)} now"
    elif expected != actual:
        yield f"{where or '/'}: {str(expected)[:200]} != {str(actual)[:200]}"


def summary_of_differences(expected: Any, actual: Any, shown: int = 25) -> str | None:
    """The first ``shown`` differences and how many there are in all (None when equal): a whole
    re-record is reviewed from one failing run, not one difference at a time."""
    found = list(differences(expected, actual))
    if not found:
        return None
    more = f"\n  ... and {len(found) - shown} more" if len(found) > shown else ""
    return f"{len(found)} differences:\n  " + "\n  ".join(found[:shown]) + more


# ------------------------------------------------------------------ running nndl
def cli(*argv: Any) -> str:
    """``nndl ARGV`` in this process; returns what it printed (stdout). Fails on a non-zero exit."""
    from nndl import cli as nndl_cli

    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        code = nndl_cli.main([str(a) for a in argv])
    assert code == 0, f"nndl {' '.join(map(str, argv))} -> {code}\n{errors.getvalue()[-2000:]}"
    return printed.getvalue()


def printed_lines(text: str, masker: Masker) -> list[str]:
    """Printed text line by line, wall-clock values masked: a metrics-table line whose key is one, and
    in a printed table (up to the next blank line) the column under a ``sec``/``seconds`` header."""
    lines, column = [], None
    for line in text.splitlines():
        words = line.split()
        if not words:
            column = None
        elif VOLATILE_KEY.search(words[0]):
            line = f"{words[0]} <MASKED>"
        elif column is not None:
            line = line[:column[0]] + " <MASKED>" + line[column[1]:]
        else:
            header = re.search(r"(?<=\s)(sec|seconds)(?=\s|$)", line)
            if header and len(words) > 2:  # right-aligned values end where the header ends
                column = (len(line[:header.start()].rstrip()), header.end())
        lines.append(DURATION.sub("<DUR>", DATE.sub("<DATE>", masker.text(line))))
    return lines


def floats(array: Any) -> list[str]:
    return [float(v).hex() for v in np.asarray(array, dtype=np.float64).ravel()]


QUIET = ["--no-progress"]
FASHION_SMALL = ["--set", "subset=1200", "--set", "test_subset=300"]


def write_digits_folder(root: Path, per_class: int = 30) -> Path:
    """scikit-learn's 8x8 digits as ROOT/CLASS/*.png (grey, 0..255), the first ``per_class`` of each class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[int, int] = {}
    for image, label in zip(digits.images, digits.target):
        if counts.get(int(label), 0) >= per_class:
            continue
        counts[int(label)] = counts.get(int(label), 0) + 1
        folder = root / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).round().astype(np.uint8), mode="L").save(
            folder / f"{counts[int(label)]:03d}.png")
    return root


def write_wine_csv(path: Path) -> Path:
    from sklearn.datasets import load_wine

    wine = load_wine()
    rows = ["label," + ",".join(f"f{i}" for i in range(wine.data.shape[1]))]
    rows += [f"class{t}," + ",".join(f"{v:g}" for v in row) for row, t in zip(wine.data, wine.target)]
    path.write_text("\n".join(rows) + "\n")
    return path


def fashion_test_images(n: int) -> np.ndarray:
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as fh:
        data = fh.read()
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)[:n].copy()


def write_idx(path: Path, images: np.ndarray) -> Path:
    head = struct.pack(">BBBB", 0, 0, 8, images.ndim) + struct.pack(f">{images.ndim}I", *images.shape)
    path.write_bytes(head + images.astype(np.uint8).tobytes())
    return path


class Stop(Exception):
    pass


def interrupt_after(epoch: int):
    """A callback that presses Ctrl-C at the end of ``epoch`` (1-based)."""
    from nndl.training.callbacks import Callback

    class CtrlC(Callback):
        def on_epoch_end(self, state, row):
            if state.epoch >= epoch:
                raise KeyboardInterrupt

    return CtrlC()


# ------------------------------------------------------------------ scenarios
# Each returns a JSON-able fingerprint. They share a few runs (predict and export read them).
def _regress(tmp: Path, m: Masker, name: str, *args: str) -> dict:
    printed = cli("regress", "--out", tmp / name, *QUIET, *args)
    return {"printed": printed_lines(printed, m), "run": folder_fingerprint(tmp / name, m)}


def s_regress_seed(tmp, m):
    return _regress(tmp, m, "seed", "--set", "epochs=120")


def s_regress_smooth(tmp, m):
    return _regress(tmp, m, "smooth", "--preset", "smooth", "--set", "epochs=120")


def s_regress_auto(tmp, m):
    return _regress(tmp, m, "auto", "--preset", "auto", "--set", "epochs=60")


def s_regress_blocked_ensemble(tmp, m):
    return _regress(tmp, m, "blocked", "--set", "splitter=blocked", "--set", "final=ensemble", "--set", "epochs=100",
                    "--set", "standardize=true", "--seed", "3")


def s_regress_cluster(tmp, m):
    return _regress(tmp, m, "cluster", "--set", "splitter=cluster", "--set", "epochs=100", "--set", "hidden=32,32",
                    "--set", "activation=tanh")


def s_regress_two_inputs_groups(tmp, m):
    rng = np.random.default_rng(7)
    x = rng.uniform(-2, 2, (60, 2))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] + rng.normal(0, 0.1, 60)
    groups = np.repeat([1, 2, 3], 20)
    (tmp / "two.csv").write_text("a,b,site,t\n" + "".join(f"{p:.4f},{q:.4f},{g},{v:.4f}\n"
                                                         for (p, q), g, v in zip(x, groups, y)))
    return _regress(tmp, m, "two", "--train", tmp / "two.csv", "--test", "", "--x-cols", "a,b", "--y-col", "t",
                    "--set", "splitter=cluster", "--set", "group_col=site", "--set", "epochs=80",
                    "--set", "standardize=true")


def s_classify_mlp(tmp, m):
    printed = cli("classify", "--data", FASHION_DIR, "--out", tmp / "mlp", *QUIET, *FASHION_SMALL, "--set", "epochs=2",
                  "--set", "noise=0.1", "--set", "mixup=0.2", "--set", "translate=1", "--set", "patience=5")
    return {"printed": printed_lines(printed, m), "run": folder_fingerprint(tmp / "mlp", m)}


def s_classify_cnn(tmp, m):
    printed = cli("classify", "--data", FASHION_DIR, "--model", "cnn", "--out", tmp / "cnn", *QUIET, *FASHION_SMALL,
                  "--set", "epochs=2", "--set", "flip=true", "--set", "translate=2", "--set", "erase=0.25",
                  "--set", "rotate=10", "--set", "scale=0.1", "--set", "tta_flip=true", "--set", "schedule=cosine")
    return {"printed": printed_lines(printed, m), "run": folder_fingerprint(tmp / "cnn", m)}


def s_classify_table(tmp, m):
    printed = cli("classify", "--data", write_wine_csv(tmp / "wine.csv"), "--out", tmp / "wine", *QUIET,
                  "--set", "epochs=15", "--set", "hidden=32")
    return {"printed": printed_lines(printed, m), "run": folder_fingerprint(tmp / "wine", m)}


def s_classify_image_folder(tmp, m):
    printed = cli("classify", "--data", write_digits_folder(tmp / "digits"), "--model", "cnn", "--out", tmp / "dig",
                  *QUIET, "--set", "image_size=16", "--set", "epochs=3", "--set", "batch_size=64")
    return {"printed": printed_lines(printed, m), "run": folder_fingerprint(tmp / "dig", m)}


def s_classify_interrupted_resumed(tmp, m):
    import nndl
    from nndl.base.errors import TrainingInterrupted

    overrides = {"subset": 1200, "test_subset": 300, "epochs": 3, "data": str(FASHION_DIR)}
    with pytest.raises(TrainingInterrupted):
        nndl.classify(overrides=overrides, out=str(tmp / "res"), progress=False, echo=lambda s: None,
                      callbacks=[interrupt_after(2)])
    after_interrupt = folder_fingerprint(tmp / "res", m)
    printed = cli("classify", "--resume", tmp / "res", *QUIET)
    return {"interrupted": {k: v for k, v in after_interrupt.items() if k in ("config.json", "checkpoint.pt")},
            "printed": printed_lines(printed, m), "run": folder_fingerprint(tmp / "res", m)}


TUNE_GRID = """preset = "seed"
[fixed]
epochs = 60
standardize = true
[grid]
lr = [0.005, 0.02]
hidden = ["16", "32,32"]
"""


def s_tune_regress_stacked(tmp, m):
    (tmp / "grid.toml").write_text(TUNE_GRID)
    printed = cli("tune", "regress", "--space", tmp / "grid.toml", "--trials", 4, "--folds", 3, "--batch-trials", 2,
                  "--out", tmp / "study", "--set", "splitter=kfold")
    return {"printed": printed_lines(printed, m), "study": folder_fingerprint(tmp / "study", m)}


def s_lr_find(tmp, m):
    printed = cli("lr-find", "regress", "--out", tmp / "lr", "--no-progress", "--min-steps", 120)
    return {"printed": printed_lines(printed, m), "folder": folder_fingerprint(tmp / "lr", m)}


def _need(tmp: Path, name: str, scenario: Callable) -> Path:
    """A run another scenario makes (made here when this scenario runs alone)."""
    if not (tmp / name / "metrics.json").exists():
        scenario(tmp, Masker(tmp))
    return tmp / name


def s_predict(tmp, m):
    from PIL import Image

    reg = _need(tmp, "seed", s_regress_seed)
    (tmp / "xs.csv").write_text("x\n-4.5\n-2.0\n0.0\n2.25\n4.75\n")
    out = {"regression_csv": printed_lines(cli("predict", reg, tmp / "xs.csv"), m),
           "regression_json": printed_lines(cli("predict", reg, tmp / "xs.csv", "--json"), m)}
    wine = _need(tmp, "wine", s_classify_table)
    rows = (tmp / "wine.csv").read_text().splitlines()
    (tmp / "wine_rows.csv").write_text(",".join(rows[0].split(",")[1:]) + "\n" +
                                       "".join(",".join(r.split(",")[1:]) + "\n" for r in rows[1:40:9]))
    out["table_csv"] = printed_lines(cli("predict", wine, tmp / "wine_rows.csv"), m)
    if HAVE_FASHION:
        mlp = _need(tmp, "mlp", s_classify_mlp)
        images = fashion_test_images(6)
        for i in range(2):
            Image.fromarray(images[i]).save(tmp / f"item{i}.png")
        Image.fromarray(255 - images[2]).resize((56, 56)).convert("RGB").save(tmp / "photo.png")  # light background
        write_idx(tmp / "batch.idx", images[3:6])
        out["png"] = printed_lines(cli("predict", mlp, tmp / "item0.png", tmp / "item1.png", tmp / "photo.png"), m)
        out["png_json_top5"] = printed_lines(cli("predict", mlp, tmp / "item0.png", "--json", "--top", 5), m)
        out["idx"] = printed_lines(cli("predict", mlp, tmp / "batch.idx"), m)
    return out


def s_export(tmp, m):
    import onnxruntime

    reg = _need(tmp, "seed", s_regress_seed)
    x = np.linspace(-5, 5, 11, dtype=np.float32)[:, None]
    runs = [("regress", reg, x)]
    if HAVE_FASHION:
        cnn = _need(tmp, "cnn", s_classify_cnn)
        runs.append(("classify", cnn, fashion_test_images(4).astype(np.float32)[:, None]))
    out = {}
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    for name, run, inputs in runs:
        onnx_file, ts_file = tmp / f"{name}.onnx", tmp / f"{name}.ts"
        cli("export", run, "--format", "onnx", "--out", onnx_file)
        cli("export", run, "--format", "torchscript", "--out", ts_file)
        session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        onnx_out = session.run(None, {session.get_inputs()[0].name: inputs})[0]
        with torch.no_grad():
            ts_out = torch.jit.load(str(ts_file))(torch.from_numpy(inputs)).numpy()
        out[name] = {"onnx": floats(onnx_out), "torchscript": floats(ts_out)}
    return out


def s_sklearn(tmp, m):
    from sklearn.datasets import load_iris

    from nndl.tools.sklearn import NNClassifier, NNRegressor

    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (80, 1)).astype(np.float32)
    y = (np.sin(x[:, 0]) + rng.normal(0, 0.1, 80)).astype(np.float32)
    reg = NNRegressor(hidden=[16, 16], epochs=80, random_state=0).fit(x, y)
    iris = load_iris()
    clf = NNClassifier(hidden=[16], epochs=20, random_state=0).fit(iris.data, iris.target)
    return {"regressor": floats(reg.predict(x[:10])),
            "classifier": floats(clf.predict_proba(iris.data[::15])),
            "classes": [int(c) for c in clf.predict(iris.data[::15])]}


SCENARIOS: dict[str, tuple[Callable, bool]] = {  # name -> (scenario, needs Fashion-MNIST)
    "regress_seed": (s_regress_seed, False),
    "regress_smooth": (s_regress_smooth, False),
    "regress_auto": (s_regress_auto, False),
    "regress_blocked_ensemble": (s_regress_blocked_ensemble, False),
    "regress_cluster": (s_regress_cluster, False),
    "regress_two_inputs_groups": (s_regress_two_inputs_groups, False),
    "classify_mlp": (s_classify_mlp, True),
    "classify_cnn": (s_classify_cnn, True),
    "classify_table": (s_classify_table, False),
    "classify_image_folder": (s_classify_image_folder, False),
    "classify_interrupted_resumed": (s_classify_interrupted_resumed, True),
    "tune_regress_stacked": (s_tune_regress_stacked, False),
    "lr_find": (s_lr_find, False),
    "predict": (s_predict, False),
    "export": (s_export, False),
    "sklearn": (s_sklearn, False),
}


@pytest.fixture(scope="module")
def deterministic():
    """One thread and deterministic algorithms for the module; the caller's settings come back after."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


@pytest.fixture(scope="module")
def shared_tmp(tmp_path_factory):
    """One folder for the module: predict and export reuse the runs the other scenarios made."""
    return tmp_path_factory.mktemp("golden")


MACHINE = GOLDEN / "MACHINE.json"


def kernel_set() -> dict[str, str]:
    """What decides the last bits of a float here: torch's CPU kernel set and its version."""
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}


def fingerprint(name: str, tmp: Path) -> Any:
    scenario, _ = SCENARIOS[name]
    here = Path.cwd()
    os.chdir(tmp)  # a run without --out (none here) or a relative path stays inside tmp
    try:
        return json.loads(json.dumps(scenario(tmp, Masker(tmp))))
    finally:
        os.chdir(here)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")  # torch's own, on load
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_golden_run(name, deterministic, shared_tmp, tmp_path_factory):
    if SCENARIOS[name][1] and not HAVE_FASHION:
        pytest.skip("Fashion-MNIST Debian package (dataset-fashion-mnist) not installed")
    path = GOLDEN / f"{name}.json"
    if not RECORD:
        recorded = json.loads(MACHINE.read_text()) if MACHINE.exists() else None
        if recorded != kernel_set():
            pytest.skip(f"golden files recorded with {recorded}, this machine runs {kernel_set()}: exact floats "
                        "differ between CPU kernel sets; re-record here with NNDL_GOLDEN_RECORD=1 once main is green")
    actual = fingerprint(name, shared_tmp)
    if RECORD:
        again = fingerprint(name, tmp_path_factory.mktemp(f"again-{name}"))
        unstable = summary_of_differences(actual, again)
        assert unstable is None, f"{name} is not deterministic; mask it in tests/test_golden.py: {unstable}"
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
        MACHINE.write_text(json.dumps(kernel_set(), indent=1, sort_keys=True) + "\n")
        return
    assert path.exists(), f"{path} missing: record it with NNDL_GOLDEN_RECORD=1 (see the module docstring)"
    difference = summary_of_differences(json.loads(path.read_text()), actual)
    assert difference is None, f"{name} differs from {path.name}: {difference}"
