"""The run folder: one writer for everything a run leaves behind.

``config.json`` (resolved config), ``metrics.json`` (flat final numbers),
``history.csv`` (one row per epoch, and per fold where relevant), ``model.pt``
(state dict + config + class names; loads with ``weights_only=True``),
``figures/*.png`` and ``report.html``.
"""
from __future__ import annotations

import contextlib
import csv
import fnmatch
import hashlib
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

from nndl.base.errors import NndlError
from nndl.base.fileio import atomic_torch_save, atomic_write_text, interrupts_held
from nndl.base.masking import mask_secrets

CHECKPOINT_FORMAT = "nndl-model-v1"


RUN_MARKER = ".nndl-run"  # in every folder nndl creates: what it wrote there (see write_marker)
MARKER_FORMAT = "nndl-run-v2"
# The files a run folder consists of (every nndl command reads them; an output never replaces one) ...
RUN_FILES = ("config.json", "checkpoint.pt", "history.csv", "model.pt", "metrics.json", "environment.json",
             "report.html", "figures/*", "tensorboard/*")
# ... and the files `nndl export` adds to it by default.
EXPORT_FILES = ("model.onnx", "model.torchscript.pt")
# A run folder's states, in order: "training" (config.json; a classification's checkpoint.pt),
# "tested" (history.csv, model.pt, metrics.json, environment.json: the results), "complete" (figures, report).
STATES = ("training", "tested", "complete")


def write_marker(folder: str | Path, kind: str, *, state: str = "complete", writes: tuple[str, ...] = (),
                 **extra: Any) -> Path:
    """Write ``folder``'s marker: the folder's kind and state, the patterns of the files nndl writes into
    it (``writes``) and, once :func:`seal` has run, every file it wrote with its size and SHA-256."""
    body = {"format": MARKER_FORMAT, "kind": kind, "state": state, "writes": list(writes), "files": {}, **extra}
    return atomic_write_text(Path(folder) / RUN_MARKER, json.dumps(body, indent=1) + "\n")


def read_marker(folder: str | Path) -> dict | None:
    """The marker of ``folder``, or None: no marker, or one that lists no files (older nndl, or not nndl's)."""
    try:
        body = json.loads((Path(folder) / RUN_MARKER).read_text())
    except (OSError, ValueError):  # missing, a folder, not text, not JSON
        return None
    if not isinstance(body, dict) or body.get("format") != MARKER_FORMAT or not isinstance(body.get("files"), dict):
        return None
    return body


def run_view(folder: str | Path, config: Any = None) -> dict[str, Any]:
    """How a run folder's task wants it shown, as the run recorded it in its marker (see
    :meth:`nndl.tasks.base.Task.view`): ``task``, ``label``, ``key_metrics``, ``main_figures``,
    ``cards``, ``captions``. A folder made before nndl recorded it has only ``task``, from its
    ``config.json`` keys (``config``, or read here), or ``"run"`` when they do not tell."""
    from nndl.base.config import task_of_config

    view = (read_marker(folder) or {}).get("view")
    view = dict(view) if isinstance(view, dict) else {}
    if not isinstance(view.get("task"), str) or not view["task"]:
        if config is None:
            try:
                config = json.loads((Path(folder) / "config.json").read_text())
            except (OSError, ValueError):
                config = None
        view["task"] = task_of_config(config) or "run"
    return view


def _entries(folder: Path) -> list[tuple[str, Path]]:
    """Every file and symlink under ``folder`` but the marker, as (relative POSIX path, path); links not followed."""
    out = []
    for top, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = Path(top, name)
            rel = path.relative_to(folder).as_posix()
            if rel != RUN_MARKER:
                out.append((rel, path))
    return sorted(out)


def _digest(path: Path) -> dict:
    if path.is_symlink():
        return {"symlink": os.readlink(path)}
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


def _matches(rel: str, patterns) -> bool:
    """``rel`` (or the ``rel.tmp`` of an atomic write cut short) matches one of ``patterns``."""
    name = rel[:-4] if rel.endswith(".tmp") else rel
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def seal(folder: str | Path, state: str | None = None, keep_place: bool = True) -> None:
    """Record in the marker every file now in ``folder`` (a folder this nndl run made and alone writes to)
    and, if given, its new ``state``; ``keep_place=False`` forgets the run it was to replace. A folder
    without a current marker (an older nndl's run, resumed) is left as it is."""
    folder = Path(folder)
    body = read_marker(folder)
    if body is None:
        return
    files = {}
    for rel, path in _entries(folder):
        try:
            files[rel] = _digest(path)
        except OSError:  # gone since it was listed (a temporary file of a writer that just finished)
            continue
    body["files"] = files
    if state is not None:
        body["state"] = state
    if not keep_place:
        body.pop("replaces", None)
    atomic_write_text(folder / RUN_MARKER, json.dumps(body, indent=1) + "\n")


def record(path: str | Path) -> None:
    """After writing ``path``: when it lies in an nndl folder, that folder's marker names it (so that
    ``--overwrite`` may still replace the folder)."""
    path = Path(path).absolute()
    for folder in path.parents:
        if (folder / RUN_MARKER).exists():
            body = read_marker(folder)
            if body is not None and path.is_file():
                body["files"][path.relative_to(folder).as_posix()] = _digest(path)
                atomic_write_text(folder / RUN_MARKER, json.dumps(body, indent=1) + "\n")
            return


def _unreplaceable(path: Path) -> str | None:
    """Why ``--overwrite`` may not delete the folder ``path``, or None when every file in it is one nndl wrote
    there, unchanged (or, cut short by a kill, one of the files the marker says nndl writes)."""
    entries = _entries(path)
    if not entries:
        return None  # only a marker, or nothing: nothing to lose
    body = read_marker(path)
    if body is None:
        text = (path / RUN_MARKER).read_bytes()[:200] if (path / RUN_MARKER).is_file() else b""
        if b"written by nndl" in text:
            return (f"its {RUN_MARKER} marker is from an older nndl and does not list the files nndl wrote "
                    f"({entries[0][0]} among them), so nndl cannot tell they are all its own")
        return f"it holds {entries[0][0]}, which nndl did not write (no {RUN_MARKER} listing it)"
    if body.get("kind") == "study":
        return "it is an nndl tune study folder (a run never replaces a study's trials)"
    for rel, file in entries:
        entry = body["files"].get(rel)
        if entry is None and (file.is_symlink() or not _matches(rel, body.get("writes", ()))):
            return f"it holds {rel}, which nndl did not write"
        if entry is not None and _digest(file) != entry:
            return f"it holds {rel}, changed since nndl wrote it"
    return None


def _protected_reason(path: Path, inputs: list[str | Path]) -> str | None:
    """Why ``path`` must never be emptied by --overwrite, or None."""
    real = path.resolve()
    home = Path.home().resolve()
    cwd = Path.cwd().resolve()
    if real == Path(real.anchor):
        return "it is the file-system root"
    if real == home:
        return "it is your home folder"
    if real == cwd or real in cwd.parents:
        return "it is the current folder or one of its parents"
    for item in inputs:
        if item and not str(item).startswith("bundled:"):
            p = Path(item).resolve()
            if real == p or real in p.parents:
                return f"it holds the input {item}"
    return _unreplaceable(path)


def prepare_out_dir(out: str | Path, overwrite: bool = False, inputs: list[str | Path] = (),
                    what: str = "run") -> Path:
    """Check that ``out`` may be used, without writing anything; return it as a Path.

    A missing or empty folder is fine. An existing non-empty folder needs ``overwrite``,
    and even then only a folder that nndl wrote -- every file in it is listed, unchanged, by its
    :data:`RUN_MARKER` -- and that is not the current folder, home, ``/`` or a folder holding one
    of ``inputs`` may be replaced: nndl never deletes what it did not make.
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
            raise NndlError(f"--out {path}: refusing to --overwrite it: {why}; choose a new folder for --out")
    parent = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NndlError(f"--out {path}: {parent} is not writable; choose a folder you can write to")
    return path


def _free_name(path: Path, suffix: str) -> Path:
    """``PATH<suffix>``, or ``PATH<suffix>-2``, ``-3`` ... when that exists."""
    candidate, n = path.with_name(path.name + suffix), 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}{suffix}-{n}")
    return candidate


def new_run_dir(out: str | Path | None, task: str, overwrite: bool = False, root: str | Path = "runs",
                inputs: list[str | Path] = (), writes: tuple[str, ...] = RUN_FILES + EXPORT_FILES,
                view: dict | None = None) -> Path:
    """Create the run folder (marked as nndl's, in state "training") and return it.

    ``out=None`` makes a new timestamped folder under ``root``. An existing, non-empty ``out`` is an
    error unless ``overwrite``, and then only a folder that nndl made may be replaced (see
    :func:`prepare_out_dir`); ``inputs`` are the user's input files, whose folders are never
    replaced. The replacing run is built beside the old one, in ``OUT.nndl-new``, and
    :func:`place` moves it over the old one when it is complete: until then the old run is intact.
    ``writes`` are the patterns of the files the run writes (see :func:`write_marker`); ``view`` is
    how the run's task wants the folder shown (key metrics, main figures), recorded in the marker so
    that the run-folder readers never need the task (see :class:`nndl.runfolder.objects.Run`).
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
    extra = {"view": view} if view else {}
    if path.is_dir() and any(path.iterdir()):  # an nndl run that may be replaced: build the new one beside it
        extra["replaces"], path = path.name, _free_name(path, ".nndl-new")
    made = [p for p in [path, *path.parents] if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NndlError(f"--out {path}: cannot create it ({e.strerror}); choose a folder you can write to") from None
    try:
        # "made": the parent folders created for it, removed again with a failed run (no empty runs/)
        write_marker(path, task, state="training", writes=writes, made=len(made) - 1, **extra)
        (path / "figures").mkdir(exist_ok=True)
    except BaseException:
        if path in made:
            shutil.rmtree(path, ignore_errors=True)
        discard(path, len(made) - 1)
        raise
    return path


def destination(path: str | Path) -> Path:
    """Where the run being written in ``path`` ends up: the run it replaces (see :func:`new_run_dir`), or ``path``."""
    body = read_marker(path) or {}
    return Path(path).with_name(body["replaces"]) if body.get("replaces") else Path(path)


def place(path: str | Path) -> Path:
    """Mark the run in ``path`` complete and, when it replaces an older run, move it over that one; return
    where it is. The old run is removed only now, and only if it still holds nothing but nndl's files."""
    path = Path(path)
    final = destination(path)
    with interrupts_held():
        seal(path, "complete", keep_place=False)
        if final == path:
            return path
        trash = None
        if final.exists() or final.is_symlink():
            why = _protected_reason(final, []) if final.is_dir() and not final.is_symlink() else "it is not a folder"
            if why:
                raise NndlError(f"--out {final}: refusing to replace it now: {why}; the new run is complete in {path}")
            trash = _free_name(final, ".nndl-old")
            os.rename(final, trash)
        os.rename(path, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final


def discard(path: str | Path, made: int | None = None) -> None:
    """Remove the run folder ``path`` (which this process created: it holds the marker) and the parent
    folders created with it, when empty. A failed run would otherwise leave a folder with only
    config.json, which looks like a run, or an empty ``runs/``."""
    path = Path(path)
    if made is None:
        made = int((read_marker(path) or {}).get("made", 0))
    if (path / RUN_MARKER).exists():  # ours, by construction; never anything else
        shutil.rmtree(path, ignore_errors=True)
    for parent in list(path.parents)[:made]:
        try:
            parent.rmdir()
        except OSError:  # not empty (or gone): someone else's now
            break


@contextlib.contextmanager
def removed_on_failure(path: Path):
    """Remove the new folder ``path`` (see :func:`discard`) when the block fails or is interrupted."""
    try:
        yield path
    except BaseException:
        discard(path)
        raise


# ----------------------------------------------------------------------------- outputs
def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path after symlinks, or one inode (a hard link)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def _read_folder_file(real: Path, folder: Path) -> Path | None:
    """The file of the run (or study) ``folder`` that ``real`` (resolved) is, or None.

    A run's files are :data:`RUN_FILES`, its marker and what its marker says nndl writes there
    (minus the exports, which are outputs); a nested run (a study's best run) is judged by its own."""
    inner = next((p for p in real.parents if (p / RUN_MARKER).exists() and (p == folder or folder in p.parents)),
                 folder)
    try:
        rel = real.relative_to(inner).as_posix()
    except ValueError:
        return None
    writes = [w for w in (read_marker(inner) or {}).get("writes", ()) if w not in EXPORT_FILES]
    return inner / rel if rel == RUN_MARKER or _matches(rel, (*RUN_FILES, *writes)) else None


def check_output(out: str | Path, *, inputs=(), folders=(), option: str = "--out") -> Path:
    """Refuse an output file that is one of the command's ``inputs`` or a file of a run folder it reads
    (``folders``): by path, through a symlink or by a hard link. Returns ``out`` as a Path.

    Raises
    ------
    NndlError
        One line naming the output and what it would have replaced.
    """
    path = Path(out)
    for item in inputs:
        if _same_file(path, Path(item)):
            raise NndlError(f"{option} {out}: is the input {item}; write the output to another file")
    real = path.resolve()
    for folder in folders:
        folder = Path(folder).resolve()
        hit = _read_folder_file(real, folder) if folder in real.parents else None
        if hit is None and path.exists():  # a hard link to one of the run's files, from anywhere
            hit = next((p for rel, p in _entries(folder) if _matches(rel, RUN_FILES) and _same_file(p, path)), None)
        if hit is not None:
            raise NndlError(f"{option} {out}: is {hit}, a file of the run nndl reads; write the output elsewhere")
    return path


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
    from nndl import __version__

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
