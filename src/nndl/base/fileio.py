"""Atomic file writes: a crash, a full disk or a file-size limit never leaves half a file behind.

Every file is written to ``NAME.tmp`` beside its destination and renamed over it when complete;
on failure the temporary file is removed and the error (an ``OSError`` naming the destination)
propagates, so the previous version of the file, if any, is untouched. :func:`interrupts_held`
makes a group of such writes one step that a Ctrl-C cannot split.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename not in (None, str(tmp)):
            raise
        # a failed write(2) carries no file name, and the temporary name means nothing to the user
        raise OSError(e.errno, e.strerror, str(path)) from None
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


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block is done, then deliver it as it would have been.

    For a few quick writes that belong together (a run's model, history and metrics): an interrupt
    between them would leave a folder that is neither running nor finished. Only the main thread
    receives signals, so elsewhere this does nothing; the previous handler is always restored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        if previous is signal.default_int_handler:
            raise KeyboardInterrupt
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)
