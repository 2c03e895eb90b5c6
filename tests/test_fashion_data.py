"""Fashion-MNIST data layer: IDX/CSV readers, discovery, hashes, splits, download."""

import functools
import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from nndl.data import fashion, readers, splits
from nndl.base.errors import NndlError

REAL = Path("/usr/share/datasets/fashion-mnist")
needs_real = pytest.mark.skipif(
    not all((REAL / n).is_file() for p in fashion.FILES.values() for n in p),
    reason=f"real Fashion-MNIST not at {REAL} (apt-get install dataset-fashion-mnist)")


def ref_read_idx(path):
    """Plain, independent IDX reader: struct header, then the raw bytes."""
    with gzip.open(path, "rb") as f:
        zero, dtype, ndim = struct.unpack(">HBB", f.read(4))
        assert zero == 0 and dtype == 0x08
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        data = f.read()
    assert len(data) == int(np.prod(dims))
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def write_idx(path, arr, gz=True, magic=None, extra=b"", cut=0):
    """Write ``arr`` (uint8) as IDX; ``magic``/``extra``/``cut`` make deliberately broken files."""
    arr = np.asarray(arr, dtype=np.uint8)
    head = magic if magic is not None else bytes([0, 0, 0x08, arr.ndim])
    raw = head + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes() + extra
    raw = raw[:len(raw) - cut]
    Path(path).write_bytes(gzip.compress(raw) if gz else raw)
    return Path(path)


def make_idx_dir(d, n_train=20, n_test=10, gz=True, seed=0):
    """A tiny dataset under the official names; returns the arrays written."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lbls = (np.arange(n) % 10).astype(np.uint8)
        img_name, lbl_name = fashion.FILES[split]
        if not gz:
            img_name, lbl_name = img_name[:-3], lbl_name[:-3]
        write_idx(d / img_name, imgs, gz=gz)
        write_idx(d / lbl_name, lbls, gz=gz)
        out[split] = (imgs, lbls)
    return out


def hashes_of(d):
    return {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for p in fashion.FILES.values() for n in p}


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $NNDL_DATA, and the system and cache folders point at empty tmp folders."""
    monkeypatch.delenv("NNDL_DATA", raising=False)
    monkeypatch.setattr(fashion, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


# --- real files -----------------------------------------------------------------

@needs_real
def test_read_idx_matches_reference_on_real_files():
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        got, want = readers.read_idx(REAL / name), ref_read_idx(REAL / name)
        assert got.dtype == np.uint8 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@needs_real
def test_load_real_dataset(isolated):
    data = fashion.load_fashion(REAL)  # verify=True: official hashes must match
    assert data.train_images.shape == (60000, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (10000, 28, 28)
    assert data.train_labels.dtype == torch.int64 and data.source == str(REAL)
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.class_names == fashion.CLASS_NAMES and len(data.class_names) == 10


@needs_real
def test_sha_mismatch_on_modified_real_file(isolated):
    d = isolated / "mod"
    shutil.copytree(REAL, d)
    # Re-compress the same labels with a different gzip mtime: valid data, different hash.
    raw = gzip.decompress((d / "train-labels-idx1-ubyte.gz").read_bytes())
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw, mtime=12345))
    with pytest.raises(NndlError, match="train-labels-idx1-ubyte.gz.*--no-verify"):
        fashion.load_fashion(d)
    assert len(fashion.load_fashion(d, verify=False).train_labels) == 60000


# --- tiny IDX files -------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    # Name says .gz but content may be plain: detection must use magic bytes.
    got = readers.read_idx(write_idx(tmp_path / "x.gz", arr, gz=gz))
    np.testing.assert_array_equal(got, arr)
    got[0, 0, 0] = 7  # writable


@pytest.mark.parametrize("kwargs, msg", [
    (dict(magic=b"\x08\x00\x08\x03"), "bad magic"),
    (dict(magic=b"\x00\x00\x0d\x03"), "unsupported"),
    (dict(cut=5), "truncated"),
    (dict(extra=b"\x00\x01"), "trailing"),
])
def test_read_idx_rejects_broken(tmp_path, kwargs, msg):
    p = write_idx(tmp_path / "broken-idx3-ubyte.gz", np.zeros((2, 28, 28)), **kwargs)
    with pytest.raises(NndlError, match=msg) as e:
        readers.read_idx(p)
    assert str(p) in str(e.value) and "complete copy" in str(e.value)  # a user's own file: no download advice
    with pytest.raises(NndlError, match=msg) as e:
        readers.read_idx(p, fix="re-download with `nndl data download`")  # what Fashion-MNIST's loader passes
    assert str(e.value).endswith("re-download with `nndl data download`")


def test_read_idx_corrupt_gzip(tmp_path):
    p = tmp_path / "c.gz"
    good = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))
    bad_crc = good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:]
    for bad in (good[:-6], bad_crc, good[:10] + b"\xff" * (len(good) - 10)):  # cut; CRC; garbled deflate
        p.write_bytes(bad)
        with pytest.raises(NndlError, match="gzip") as e:
            readers.read_idx(p)
        assert str(p) in str(e.value)


def test_load_tiny_idx_gz_and_plain(isolated):
    for gz in (True, False):
        d = isolated / f"tiny{gz}"
        arrays = make_idx_dir(d, gz=gz)
        if gz:
            with pytest.raises(NndlError, match="SHA-256"):  # tiny gz under official names
                fashion.load_fashion(d, verify=True)
            data = fashion.load_fashion(d, verify=False)
        else:
            data = fashion.load_fashion(d)  # un-gzipped: no hash to compare, so verify is a no-op
        np.testing.assert_array_equal(data.train_images.numpy(), arrays["train"][0])
        np.testing.assert_array_equal(data.test_labels.numpy(), arrays["test"][1])
        assert data.test_labels.dtype == torch.int64


def test_load_count_mismatch(isolated):
    d = isolated / "d"
    make_idx_dir(d)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(9))
    with pytest.raises(NndlError, match="10 images but .*9 labels") as e:
        fashion.load_fashion(d, verify=False)
    assert "t10k-images-idx3-ubyte.gz" in str(e.value)


def test_load_labels_out_of_range(isolated):
    d = isolated / "d"
    make_idx_dir(d)
    write_idx(d / "train-labels-idx1-ubyte.gz", np.full(20, 10))
    with pytest.raises(NndlError, match="train-labels-idx1-ubyte.gz.*label 10"):
        fashion.load_fashion(d, verify=False)


def test_load_wrong_image_shape(isolated):
    d = isolated / "d"
    make_idx_dir(d)
    write_idx(d / "train-images-idx3-ubyte.gz", np.zeros((20, 32, 32)))
    with pytest.raises(NndlError, match="train-images-idx3-ubyte.gz.*28, 28"):
        fashion.load_fashion(d, verify=False)


# --- CSV form -------------------------------------------------------------------

def write_csv(path, images, labels):
    rows = np.column_stack([labels, np.asarray(images).reshape(len(labels), -1)]).astype(int)
    header = "label," + ",".join(f"pixel{i}" for i in range(1, 785))
    np.savetxt(path, rows, fmt="%d", delimiter=",", header=header, comments="")
    return path


def test_csv_form_loads(isolated):
    rng = np.random.default_rng(1)
    d = isolated / "csv"
    d.mkdir()
    want = {}
    for split, n in (("train", 12), ("test", 5)):
        imgs, lbls = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        write_csv(d / fashion.CSV_FILES[split], imgs, lbls)
        want[split] = (imgs, lbls)
    imgs, lbls = fashion.read_csv_form(d / fashion.CSV_FILES["train"])
    assert imgs.dtype == np.uint8 and imgs.shape == (12, 28, 28) and lbls.dtype == np.uint8
    np.testing.assert_array_equal(imgs, want["train"][0])
    data = fashion.load_fashion(d)
    np.testing.assert_array_equal(data.test_images.numpy(), want["test"][0])
    np.testing.assert_array_equal(data.test_labels.numpy(), want["test"][1])
    assert data.source == str(d)


@pytest.mark.parametrize("mutate, msg", [
    (lambda lines: lines.__setitem__(3, lines[3].rsplit(",", 1)[0]), "line 4: 784 columns"),
    (lambda lines: lines.__setitem__(2, lines[2].replace(",0", ",300", 1)), r"row 2 \(line 3\): pixel\d+ = 300"),
    (lambda lines: lines.__setitem__(3, "11" + lines[3][1:]), r"row 3 \(line 4\): label 11"),
    (lambda lines: lines.__setitem__(2, lines[2].replace(",0", ",x", 1)), "line 3, column"),
])
def test_csv_form_rejects_bad_rows(tmp_path, mutate, msg):
    p = write_csv(tmp_path / "bad.csv", np.zeros((4, 28, 28)), np.array([1, 2, 3, 4]))
    lines = p.read_text().splitlines()
    mutate(lines)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(NndlError, match=msg) as e:
        fashion.read_csv_form(p)
    assert str(p) in str(e.value)


# --- discovery ------------------------------------------------------------------

def test_find_source_order(isolated, monkeypatch):
    arg, env, system, cache = (isolated / n for n in ("arg", "env", "system", "cache/nndl/fashion-mnist"))
    for d in (arg, env, system, cache):
        make_idx_dir(d, n_train=10, n_test=10)
    monkeypatch.setenv("NNDL_DATA", str(env))
    assert fashion.find_source(arg) == arg
    assert fashion.find_source() == env
    monkeypatch.delenv("NNDL_DATA")
    assert fashion.find_source() == system
    shutil.rmtree(system)
    assert fashion.cache_dir() == cache and fashion.find_source() == cache


def test_find_source_explicit_missing_is_error(isolated, monkeypatch):
    make_idx_dir(isolated / "system")  # a fallback exists but must not be used
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(NndlError, match="--data") as e:
        fashion.find_source(empty)
    assert str(empty) in str(e.value)
    monkeypatch.setenv("NNDL_DATA", str(empty))
    with pytest.raises(NndlError, match="NNDL_DATA") as e:
        fashion.find_source()
    assert str(empty) in str(e.value)


def test_find_source_nothing_found_lists_all_ways(isolated):
    with pytest.raises(NndlError) as e:
        fashion.load_fashion()
    msg = str(e.value)
    for s in ("--data", "NNDL_DATA", "apt-get install dataset-fashion-mnist", "nndl data download"):
        assert s in msg
    assert "\n" not in msg


# --- splits ---------------------------------------------------------------------

LABELS = torch.tensor([c for c, n in enumerate([50, 31, 7, 100, 13]) for _ in range(n)])


def test_stratified_split():
    n = len(LABELS)
    tr, va = splits.stratified_split(LABELS, 0.2, seed=3)
    assert tr.dtype == va.dtype == torch.int64
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(n))
    for c in range(5):
        n_c = int((LABELS == c).sum())
        assert abs(int((LABELS[va] == c).sum()) - 0.2 * n_c) <= 1
    assert torch.equal(va, splits.stratified_split(LABELS, 0.2, seed=3)[1])
    assert not torch.equal(va, splits.stratified_split(LABELS, 0.2, seed=4)[1])
    tr0, va0 = splits.stratified_split(LABELS.numpy(), 0.0)
    assert len(va0) == 0 and len(tr0) == n
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(NndlError, match="val_fraction"):
            splits.stratified_split(LABELS, bad)


def test_stratified_kfold():
    k, n = 5, len(LABELS)
    folds = splits.stratified_kfold(LABELS, k, seed=1)
    assert len(folds) == k
    vals = torch.cat([v for _, v in folds])
    assert sorted(vals.tolist()) == list(range(n))  # the validation folds partition the data
    for tr, va in folds:
        assert sorted(tr.tolist() + va.tolist()) == list(range(n))
        assert abs(len(va) - n / k) <= 1  # leftover samples spread over folds
        for c in range(5):
            n_c = int((LABELS == c).sum())
            assert abs(int((LABELS[va] == c).sum()) - n_c / k) < 1
    assert torch.equal(folds[0][1], splits.stratified_kfold(LABELS, k, seed=1)[0][1])
    assert not torch.equal(folds[0][1], splits.stratified_kfold(LABELS, k, seed=2)[0][1])
    for bad in (1, 8):  # smallest class has 7
        with pytest.raises(NndlError, match="k must"):
            splits.stratified_kfold(LABELS, bad)


# --- download -------------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    root = tmp_path / "mirror"
    make_idx_dir(root, n_train=30, n_test=10)
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", hashes_of(root)
    httpd.shutdown()
    httpd.server_close()
    t.join(5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download(server, tmp_path, isolated):
    url, hashes = server
    dest = tmp_path / "dl"
    assert fashion.download(dest, mirror=url, progress=False, expected=hashes) == dest
    assert hashes_of(dest) == hashes
    assert len(fashion.load_fashion(dest, verify=False).train_labels) == 30
    mtime = (dest / "train-images-idx3-ubyte.gz").stat().st_mtime_ns
    fashion.download(dest, mirror=url.rstrip("/"), progress=False, expected=hashes)  # present: skipped
    assert (dest / "train-images-idx3-ubyte.gz").stat().st_mtime_ns == mtime

    dest2 = tmp_path / "dl2"
    wrong = dict(hashes, **{"t10k-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(NndlError, match="t10k-images-idx3-ubyte.gz.*SHA-256"):
        fashion.download(dest2, mirror=url, progress=False, expected=wrong)
    assert not (dest2 / "t10k-images-idx3-ubyte.gz").exists()
    assert not list(dest2.glob("*.part"))  # no partial file left behind
    # Files before the bad one were verified and kept.
    assert (dest2 / "train-images-idx3-ubyte.gz").is_file()


def test_download_http_error(server, tmp_path):
    url, hashes = server
    with pytest.raises(NndlError, match="download failed"):
        fashion.download(tmp_path / "x", mirror=url + "nope/", progress=False, expected=hashes)
    assert not list((tmp_path / "x").glob("*.part"))
