"""Fashion-MNIST: its files (IDX or the Kaggle CSV form), source discovery, SHA-256 checks, download.

Everything a loader returns has been fully validated first, so a bad file fails
with one :class:`~nndl.base.errors.NndlError` line instead of a half-loaded dataset.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nndl.base.errors import NndlError
from nndl.data.readers import read_idx, sha256_file

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ALL_FILES = [n for pair in FILES.values() for n in pair]
SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
CSV_FILES = {"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
DEFAULT_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_REFETCH = "re-download with `nndl data download`"


def cache_dir() -> Path:
    """Return the user cache folder: ``$XDG_CACHE_HOME/nndl/fashion-mnist`` or ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nndl" / "fashion-mnist"


def _first_bad_csv_line(path: Path) -> str:
    # Slow path, only after numpy failed: numpy's row numbers skip the header and blank
    # lines inconsistently, so rescan to name the exact file line.
    with open(path, encoding="utf-8", errors="replace") as f:
        next(f, None)
        for lineno, line in enumerate(f, start=2):
            fields = line.strip().split(",")
            if fields == [""]:
                continue
            if len(fields) != 785:
                return f"line {lineno}: {len(fields)} columns, expected 785 (label + 784 pixels)"
            for col, v in enumerate(fields, start=1):
                try:
                    int(v)
                except ValueError:
                    return f"line {lineno}, column {col}: {v.strip()[:20]!r} is not an integer"
    return "unparseable content"


def read_csv_form(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the Kaggle CSV form: header ``label,pixel1,...,pixel784``, one image per row.

    Returns
    -------
    images, labels : np.ndarray
        ``uint8`` arrays of shape ``(N, 28, 28)`` and ``(N,)``.

    Raises
    ------
    NndlError
        Wrong header or column count, non-integers, pixels outside 0..255 or labels
        outside 0..9; the message names the file and the line.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:  # -sig: tolerate Excel's BOM
            header = f.readline().strip().split(",")
    except OSError as e:
        raise NndlError(f"{path}: cannot read ({e.strerror}); check the path") from e
    if header[0].strip().lower() != "label" or len(header) != 785:
        raise NndlError(f"{path}: line 1: header must be `label,pixel1,...,pixel784` "
                        f"(got {len(header)} columns starting {header[0][:20]!r}); use the Kaggle CSV form")
    try:
        # int32, not uint8: out-of-range values must survive parsing so we can report them.
        data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int32, ndmin=2)
    except (ValueError, OverflowError) as e:
        raise NndlError(f"{path}: {_first_bad_csv_line(path)}; fix or re-export the CSV") from e
    if data.shape[0] == 0:
        raise NndlError(f"{path}: no data rows after the header; fix or re-export the CSV")
    labels, pixels = data[:, 0], data[:, 1:]
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise NndlError(f"{path}: row {bad[0] + 1} (line {bad[0] + 2}): label {labels[bad[0]]} "
                        "outside 0..9; fix or re-export the CSV")
    bad_r, bad_c = np.nonzero((pixels < 0) | (pixels > 255))
    if bad_r.size:
        r, c = bad_r[0], bad_c[0]
        raise NndlError(f"{path}: row {r + 1} (line {r + 2}): pixel{c + 1} = {pixels[r, c]} "
                        "outside 0..255; fix or re-export the CSV")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def _idx_paths(d: Path) -> dict[str, Path] | None:
    # Each official file may be present gzipped or with the .gz dropped; prefer the .gz
    # because only that one can be checked against the published hashes.
    found = {}
    for name in ALL_FILES:
        for cand in (d / name, d / name[:-3]):
            if cand.is_file():
                found[name] = cand
                break
        else:
            return None
    return found


def _has_source(d: Path) -> bool:
    return d.is_dir() and (_idx_paths(d) is not None or all((d / n).is_file() for n in CSV_FILES.values()))


def find_source(data_dir: str | Path | None = None) -> Path:
    """Locate a Fashion-MNIST folder.

    Search order: ``data_dir``, then ``$NNDL_DATA``, then ``/usr/share/datasets/fashion-mnist``
    (Debian package ``dataset-fashion-mnist``), then :func:`cache_dir`. A folder counts when it
    holds the four IDX files (``.gz`` or not) or ``fashion-mnist_train.csv`` + ``fashion-mnist_test.csv``.

    Raises
    ------
    NndlError
        An explicit folder (``data_dir`` or ``$NNDL_DATA``) lacks the files; there is no
        fallback then. Or nothing was found: the message lists every way to get the data.
    """
    # An explicit choice that is wrong must fail loudly, not silently fall back to another copy.
    for given, origin in ((data_dir, "--data"), (os.environ.get("NNDL_DATA") or None, "$NNDL_DATA")):
        if given is not None:
            d = Path(given).expanduser()
            if not _has_source(d):
                raise NndlError(f"{d} (from {origin}): no Fashion-MNIST files (need the four "
                                f"*-idx?-ubyte[.gz] files or {' + '.join(CSV_FILES.values())}); "
                                "point it at the right folder or run `nndl data download`")
            return d
    for d in (SYSTEM_DIR, cache_dir()):
        if _has_source(d):
            return d
    raise NndlError(f"Fashion-MNIST not found (looked in {SYSTEM_DIR} and {cache_dir()}): pass "
                    "`--data DIR` or set $NNDL_DATA to a folder with the IDX or CSV files, "
                    "or `sudo apt-get install dataset-fashion-mnist`, or run `nndl data download`")


@dataclass
class FashionData:
    """Fashion-MNIST as CPU tensors: images ``uint8 (N, 28, 28)``, labels ``int64 (N,)``."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    source: str


def _check_pair(images: np.ndarray, labels: np.ndarray, img_path: Path, lbl_path: Path) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise NndlError(f"{img_path}: images have shape {images.shape}, expected (N, 28, 28); {_REFETCH}")
    if labels.ndim != 1:
        raise NndlError(f"{lbl_path}: labels have shape {labels.shape}, expected (N,); {_REFETCH}")
    if len(images) != len(labels):
        raise NndlError(f"{img_path}: {len(images)} images but {lbl_path.name} has {len(labels)} labels; {_REFETCH}")
    if labels.size and labels.max() > 9:
        raise NndlError(f"{lbl_path}: label {labels.max()} outside 0..9; {_REFETCH}")


def load_fashion(data_dir: str | Path | None = None, verify: bool = True) -> FashionData:
    """Find, verify and load Fashion-MNIST.

    Parameters
    ----------
    data_dir : str or Path, optional
        Folder to use; see :func:`find_source` for the search order without it.
    verify : bool
        Check the official ``.gz`` files against :data:`SHA256` before parsing. Un-gzipped
        IDX files and the CSV form are not hash-checked (there is no published hash to
        compare); they still get the full structural validation.

    Raises
    ------
    NndlError
        Missing source, hash mismatch, or any malformed file; nothing is half-loaded.
    """
    src = find_source(data_dir)
    idx = _idx_paths(src)
    arrays = {}
    for split in ("train", "test"):
        if idx is None:
            p = src / CSV_FILES[split]
            images, labels = read_csv_form(p)
            _check_pair(images, labels, p, p)
        else:
            img_p, lbl_p = (idx[n] for n in FILES[split])
            for p in (img_p, lbl_p):
                want = SHA256.get(p.name)
                if verify and want:
                    got = sha256_file(p)
                    if got != want:
                        raise NndlError(f"{p}: SHA-256 {got[:12]}... does not match the official "
                                        f"{want[:12]}...; {_REFETCH}, or use --no-verify to accept it")
            images, labels = read_idx(img_p, _REFETCH), read_idx(lbl_p, _REFETCH)
            _check_pair(images, labels, img_p, lbl_p)
        arrays[split] = (torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))
    return FashionData(*arrays["train"], *arrays["test"], class_names=list(CLASS_NAMES), source=str(src))


def download(dest: str | Path | None = None, mirror: str | None = None, progress: bool = True,
             expected: dict[str, str] | None = None) -> Path:
    """Download the four official ``.gz`` files, verifying each SHA-256.

    Each file streams to a temporary file in ``dest`` and is renamed into place only after
    its hash matches, so an interrupted or corrupted download never leaves a file that
    looks valid. Files already present with the right hash are skipped.

    Parameters
    ----------
    dest : str or Path, optional
        Target folder; defaults to :func:`cache_dir`.
    mirror : str, optional
        URL base holding the files; defaults to the official Zalando bucket.
    progress : bool
        Show a tqdm progress bar per file.
    expected : dict, optional
        File name -> SHA-256 hex; defaults to :data:`SHA256` (tests inject their own).

    Returns
    -------
    Path
        The folder holding the files.
    """
    from nndl.base.progress import progress_bar  # tqdm only here; keeps `import nndl.data.fashion` light

    dest = Path(dest) if dest is not None else cache_dir()
    base = (mirror or DEFAULT_MIRROR).rstrip("/") + "/"
    expected = SHA256 if expected is None else expected
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NndlError(f"{dest}: cannot create folder ({e.strerror}); pick another destination") from e
    for name in ALL_FILES:
        target, want = dest / name, expected[name]
        if target.is_file() and sha256_file(target) == want:
            continue
        url = base + name
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with progress_bar(total=total, unit="B", unit_scale=True, desc=name, enabled=progress) as bar:
                    while block := resp.read(1 << 16):
                        out.write(block)
                        h.update(block)
                        bar.update(len(block))
            if h.hexdigest() != want:
                raise NndlError(f"{url}: SHA-256 {h.hexdigest()[:12]}... does not match expected "
                                f"{want[:12]}...; the mirror is corrupt, try again or use another mirror")
            os.replace(tmp, target)
        except OSError as e:  # URLError and HTTPError are OSErrors
            raise NndlError(f"{url}: download failed ({e}); check the network or pass another mirror") from e
        finally:  # a bad hash, a network error or Ctrl-C never leaves a partial file
            Path(tmp).unlink(missing_ok=True)
    return dest
