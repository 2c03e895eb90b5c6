"""The run folder: one writer for everything a run leaves behind.

``config.json`` (resolved config), ``metrics.json`` (flat final numbers),
``history.csv`` (one row per epoch, and per fold where relevant), ``model.pt``
(state dict + config + class names; loads with ``weights_only=True``),
``figures/*.png`` and ``report.html``.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .errors import NndlError
from .fileio import atomic_torch_save, atomic_write_text
from .masking import mask_secrets

CHECKPOINT_FORMAT = "nndl-model-v1"


RUN_MARKER = ".nndl-run"  # written into every folder nndl creates; --overwrite replaces only such folders


def _protected_reason(path: Path, inputs: list[str | Path]) -> str | None:
    """Why ``path`` must never be emptied by --overwrite, or None."""
    real = path.resolve()
    home = Path.home().resolve()
    cwd = Path.cwd().resolve()
    if real == Path(real.anchor):
        return "is the file-system root"
    if real == home:
        return "is your home folder"
    if real == cwd or real in cwd.parents:
        return "is the current folder or one of its parents"
    for item in inputs:
        if item and not str(item).startswith("bundled:"):
            p = Path(item).resolve()
            if real == p or real in p.parents:
                return f"holds the input {item}"
    if not (path / RUN_MARKER).is_file():
        return f"was not created by nndl (no {RUN_MARKER} marker)"
    return None


def prepare_out_dir(out: str | Path, overwrite: bool = False, inputs: list[str | Path] = (),
                    what: str = "run") -> Path:
    """Check that ``out`` may be used, without writing anything; return it as a Path.

    A missing or empty folder is fine. An existing non-empty folder needs ``overwrite``,
    and even then only a folder that nndl created (it holds :data:`RUN_MARKER`) and that
    is not the current folder, home, ``/`` or a folder holding one of ``inputs`` may be
    replaced: nndl never deletes what it did not make.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NndlError(f"--out {path}: exists and is not a folder; choose another path")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise NndlError(f"--out {path}: folder exists and is not empty; choose another --out, "
                            f"add --overwrite to replace an nndl {what} folder, or --resume it")
        why = _protected_reason(path, list(inputs))
        if why:
            raise NndlError(f"--out {path}: refusing to --overwrite it: it {why}; choose a new folder for --out")
    parent = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NndlError(f"--out {path}: {parent} is not writable; choose a folder you can write to")
    return path


def new_run_dir(out: str | Path | None, task: str, overwrite: bool = False, root: str | Path = "runs",
                inputs: list[str | Path] = ()) -> Path:
    """Create the run folder (marked as nndl's) and return it.

    ``out=None`` makes a new timestamped folder under ``root``. An existing,
    non-empty ``out`` is an error unless ``overwrite``, and then only a folder that
    nndl made may be replaced (see :func:`prepare_out_dir`); ``inputs`` are the
    user's input files, whose folders are never replaced.
    """
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{task}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path(root) / f"{task}-{stamp}-{n}"
        prepare_out_dir(path)
    else:
        path = prepare_out_dir(out, overwrite, inputs)
        if path.is_dir() and any(path.iterdir()):
            shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / RUN_MARKER).write_text(f"{task} folder written by nndl; nndl --overwrite may replace it\n")
        (path / "figures").mkdir(exist_ok=True)
    except OSError as e:
        raise NndlError(f"--out {path}: cannot create it ({e.strerror}); choose a folder you can write to") from None
    return path


@contextlib.contextmanager
def removed_on_failure(path: Path, keep: tuple[type[BaseException], ...] = ()):
    """Remove the run folder ``path`` (which this call created) when the block fails.

    A run that fails half-way (full disk, a bug, Ctrl-C of a regression) would otherwise leave a
    folder with only config.json and some figures, which looks like a run. Exceptions in ``keep``
    leave it in place: an interrupted classification keeps its checkpoint for ``--resume``.
    """
    try:
        yield path
    except keep:
        raise
    except BaseException:
        if (path / RUN_MARKER).is_file():  # ours, by construction; never anything else
            shutil.rmtree(path, ignore_errors=True)
        raise


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON has no NaN), tensors become numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _clean(obj.item())
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (a crash never leaves half a file)."""
    return atomic_write_text(path, json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n")


DAMAGED_FIX = "restore it, or rerun the command that wrote it"


def first_line(error: Exception, limit: int = 120) -> str:
    """The first line of an exception's message (its type name when empty), cut to ``limit`` characters."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


def read_json(path: str | Path, fix: str = DAMAGED_FIX) -> Any:
    """The JSON in ``path``; a damaged file (not JSON, not text) is one NndlError line naming it and ``fix``.

    A missing or unreadable file raises ``OSError`` as before (callers check for the file first).
    """
    try:
        return json.loads(Path(path).read_text())
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise NndlError(f"{path}: not valid JSON ({first_line(e)}); {fix}") from None


def write_history_csv(path: str | Path, rows: list[dict]) -> Path:
    """One row per epoch (columns: the union of the rows' keys, in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, text.getvalue())


def read_history_csv(path: str | Path) -> list[dict]:
    """The rows of a ``history.csv`` (numbers as floats, ``fold`` as written); a damaged file is one
    NndlError line naming it."""
    try:
        with open(path, newline="") as fh:
            return [{k: (float(v) if v not in ("", None) and k != "fold" else v) for k, v in row.items()}
                    for row in csv.DictReader(fh)]
    except (ValueError, TypeError, csv.Error) as e:  # text in a number column, binary bytes, a ragged row
        raise NndlError(f"{path}: not a history.csv nndl wrote ({first_line(e)}); {DAMAGED_FIX}") from None


def save_model(path: str | Path, task: str, config: dict, state_dicts: list[dict], **extra: Any) -> Path:
    """Save one model (or a fold ensemble: several state dicts) with what is needed to rebuild it.

    Only tensors, numbers, strings, lists and dicts are stored, so the file
    loads with ``torch.load(..., weights_only=True)``.
    """
    payload = {"format": CHECKPOINT_FORMAT, "task": task, "config": config,
               "state_dicts": [{k: v.detach().cpu() for k, v in sd.items()} for sd in state_dicts], **extra}
    return atomic_torch_save(payload, path)


def load_model_file(path: str | Path) -> dict:
    """Load a ``model.pt`` written by :func:`save_model` without unpickling arbitrary objects.

    Raises
    ------
    NndlError
        When the file is missing, is not a PyTorch file, or is not an nndl checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise NndlError(f"{path}: no such checkpoint; give a run folder holding model.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NndlError(f"{path}: not a loadable nndl checkpoint ({first[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise NndlError(f"{path}: not an nndl checkpoint (no '{CHECKPOINT_FORMAT}' marker); "
                        "give the model.pt of an nndl run")
    return payload


def environment() -> dict[str, Any]:
    """Versions, device and git commit, recorded with every run."""
    from . import __version__

    env = {"nndl": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           timeout=5, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    env["argv"] = mask_secrets(" ".join(sys.argv))  # a --storage URL may carry a password
    return env


def format_metrics(metrics: dict[str, Any]) -> str:
    """A two-column table of the scalar metrics."""
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    width = max(map(len, scalars), default=0)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
    for k, v in scalars.items():
        lines.append(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return "\n".join(lines)
