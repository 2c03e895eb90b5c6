"""File formats every dataset kind reads: IDX arrays, strict CSV rows and cells, file hashes.

One reader per format, shared by the dataset modules (Fashion-MNIST, IDX folders, CSV tables,
regression CSVs); each fails with one :class:`~nndl.base.errors.NndlError` line naming the file
and, for a CSV, the row and column.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from nndl.base.errors import NndlError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, streamed in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_idx(path: str | Path, fix: str = "check that the file is a complete copy") -> np.ndarray:
    """Read an IDX file of unsigned bytes (the MNIST family's format), gzipped or plain.

    Gzip is detected by the magic bytes ``1f 8b``, not the name: decompressed copies
    often keep the ``.gz`` suffix (and vice versa).

    Returns
    -------
    np.ndarray
        Writable ``uint8`` array shaped as the header says.

    Raises
    ------
    NndlError
        Unreadable file, corrupt gzip, bad magic, a type other than 0x08, or a payload
        whose size differs from the header's dimensions (truncated or trailing bytes);
        the line ends with ``fix`` (what the caller's user can do, e.g. download again).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise NndlError(f"{path}: cannot read ({e.strerror}); check the path or {fix}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise NndlError(f"{path}: corrupt gzip data ({e}); {fix}") from e
    if len(raw) < 4 or raw[0:2] != b"\x00\x00":
        raise NndlError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'}); {fix}")
    if raw[2] != 0x08:
        raise NndlError(f"{path}: IDX type 0x{raw[2]:02x} unsupported (only unsigned bytes, 0x08); {fix}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise NndlError(f"{path}: IDX header truncated or has {ndim} dimensions; {fix}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise NndlError(f"{path}: IDX payload {what} ({got} bytes, header {dims} needs {expected}); {fix}")
    # frombuffer views the immutable bytes; copy once so callers (and torch) get a writable array.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_rows(path: str | Path, shown: str | Path | None = None, needs: str = "a header row and data rows"
              ) -> list[list[str]]:
    """The non-blank rows of a CSV file as strings; one-line errors naming ``shown`` (default ``path``)
    for a missing, unreadable, binary or empty file (``needs`` says what an empty file should hold)."""
    shown = path if shown is None else shown
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except OSError as e:
        raise NndlError(f"{shown}: cannot read ({e.strerror}); give an existing CSV file") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise NndlError(f"{shown}: not a text CSV file ({e})") from None
    if not rows:
        raise NndlError(f"{shown}: file is empty; it needs {needs}")
    return rows


def is_number(cell: str) -> bool:
    """Whether a CSV cell reads as a number (``float`` accepts it)."""
    try:
        float(cell)
        return True
    except ValueError:
        return False


def is_header(row: list[str], shown) -> bool:
    """Whether the first row of a CSV of numbers is a header: when none of its cells is a number.

    A row of numbers is data. A row that mixes numbers and text is neither: it is a typo in
    headerless data (``0.5,1.2x``), which taken as a header would drop the row in silence, or a
    header with a number as a column name. It is one NndlError naming row 1 and the column.
    """
    numeric = [is_number(c) for c in row]
    if not any(numeric):
        return True
    if all(numeric):
        return False
    j = numeric.index(False)
    raise NndlError(f"{shown}: row 1, column {j + 1}: {row[j].strip()!r} is not a number, but the other cells of "
                    "row 1 are; if row 1 is data, fix that cell; if it is a header, give every column a name that "
                    "is not a number")


def parse_cell(cell: str, shown, line: int, column: str) -> float:
    """One CSV cell as a finite float32-sized number, or an NndlError naming the file, row and column."""
    try:
        v = float(cell)
    except ValueError:
        raise NndlError(f"{shown}: row {line}, column '{column}': {cell.strip()!r} is not a number") from None
    if not math.isfinite(v):
        raise NndlError(f"{shown}: row {line}, column '{column}': value {cell.strip()} is not finite; "
                        "remove or impute it")
    if abs(v) > FLOAT32_MAX:  # nndl computes in float32, where this would become inf
        raise NndlError(f"{shown}: row {line}, column '{column}': {cell.strip()} is too large for "
                        f"float32 (|x| <= {FLOAT32_MAX:.3g}); rescale that column")
    return v
