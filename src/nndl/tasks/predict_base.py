"""What the tasks' predict parts share: the model rebuilt from a ``model.pt``, checked first.

``model.pt`` is a file anyone can edit or forge: every value that decides what is built is checked
before it is used (one :class:`~nndl.base.errors.NndlError` line naming the key), and a network is
built on the "meta" device (shapes, no memory) and compared with the weights before it is built for
real, so a shape of huge, negative or text values is one line, never an allocation. Each task checks
and rebuilds its own model (:meth:`nndl.tasks.base.Task.check_model_meta`, :meth:`~nndl.tasks.base.Task.rebuild`)
with these helpers; :mod:`nndl.tools.predict` does the rest the same way for every task.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from nndl.base.errors import NndlError
from nndl.runfolder.files import first_line

MAX_INPUT_VALUES = 2**31  # values in one input (C*H*W or features): beyond it, torch's indexing overflows


@dataclass
class LoadedRun:
    """A model rebuilt from a run's ``model.pt`` (each task's subclass adds what its predictions need).

    Attributes
    ----------
    task : str
        The task's name (:func:`nndl.tasks.get_task`).
    cfg : the task's config dataclass
    model : nn.Module
        The final model in eval mode.
    path : str
        The ``model.pt`` it was read from.
    """

    task: str
    cfg: Any
    model: nn.Module
    path: str = ""


def bad(path: Path, key: str, value: Any, why: str) -> NndlError:
    """The one line for a ``model.pt`` value ``key`` that cannot be used, and why."""
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return NndlError(f"{path}: '{key}' = {shown}: {why}; the file is damaged or not from nndl: use the model.pt "
                     "its run wrote")


def is_int(v: Any) -> bool:
    """A whole number (a bool is not one here)."""
    return isinstance(v, int) and not isinstance(v, bool)


def names(path: Path, payload: dict, key: str, length: int | None = None, at_least: int = 0) -> None:
    """Check that ``payload[key]`` is a list of ``length`` (or at least ``at_least``) names."""
    value = payload[key]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise bad(path, key, value, "expected a list of names (str)")
    if (length is not None and len(value) != length) or len(value) < at_least:
        want = f"{length}" if length is not None else f"at least {at_least}"
        raise bad(path, key, value, f"expected {want} names, found {len(value)}")


def state_dicts(path: Path, payload: dict, key: str) -> None:
    """Check that ``payload[key]`` (when present) is a list of state dicts."""
    value = payload.get(key) or []
    if not isinstance(value, list) or not all(isinstance(sd, dict) and all(
            isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in sd.items()) for sd in value):
        raise bad(path, key, value, "expected a list of state dicts (names -> tensors)")


def built_checked(build: Callable[[], nn.Module], state: dict, path: Path) -> nn.Module:
    """``build()`` on the meta device first: when its parameter shapes are not the weights', one line, before
    any memory is taken; then built for real and loaded."""
    try:
        with torch.device("meta"):
            skeleton = build()
    except (ValueError, RuntimeError, TypeError) as e:  # e.g. a CNN on images smaller than it needs
        raise NndlError(f"{path}: its config and metadata describe no model nndl can build "
                        f"({first_line(e, 160)})") from None
    wanted = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if wanted != found:
        key = next((k for k in wanted if found.get(k) != wanted[k]), None) or next(k for k in found if k not in wanted)
        raise NndlError(f"{path}: weights do not fit the model its config and metadata describe ('{key}': "
                        f"{found.get(key, 'missing')} in the file, {wanted.get(key, 'none')} in the model); use the "
                        "model.pt its run wrote")
    torch.manual_seed(0)  # construction randomness is overwritten by the weights; keep it deterministic anyway
    return load_state(build(), state, path)


def load_state(model: nn.Module, state: dict, path: Path) -> nn.Module:
    """``model`` with the weights ``state`` loaded, in eval mode (one line when they do not fit)."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        raise NndlError(f"{path}: weights do not fit the model its config describes ({first_line(e, 160)})") from None
    return model.eval()


def csv_text(columns: list[str], rows: list[dict]) -> str:
    """``rows`` as CSV text under the header ``columns`` (floats as the shortest text that reads back the same)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:  # repr: the shortest text that reads back as the same number
        writer.writerow(["" if r.get(c) is None else (repr(r[c]) if isinstance(r[c], float) else r[c])
                         for c in columns])
    return buf.getvalue()
