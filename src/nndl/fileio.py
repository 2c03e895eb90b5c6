"""Atomic file writes: a crash, a full disk or a file-size limit never leaves half a file behind.

Every file is written to ``NAME.tmp`` beside its destination and renamed over it when complete;
on failure the temporary file is removed and the error (an ``OSError`` naming the file) propagates,
so the previous version of the file, if any, is untouched.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically. Serialising to memory first turns a failed write into an ``OSError``
    naming the file (torch's own writer reports a full disk as an opaque ``RuntimeError``)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())
