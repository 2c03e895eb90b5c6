"""User-facing errors: the CLI prints these as one line and exits with code 2.

Also the type checks of the Python API's arguments (:func:`path_argument` and its kin): a wrong
type given to ``nndl.regress``, ``nndl.tools.predict`` ... is the same one line as a wrong value, instead
of a ``TypeError`` from deep inside ``pathlib`` or a loop over the characters of a string.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable


class NndlError(Exception):
    """A problem with the user's input (file, config, arguments) that they can fix.

    The message is one line naming the file/field and the fix.
    """


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C: the message says what was kept and the next step (exit code 130 in the CLI).

    A ``KeyboardInterrupt``: code that catches ``Exception`` (a search's trial guard, a retrain)
    lets it through, as it would the Ctrl-C itself.

    From :func:`nndl.training.trainer.train`: ``epoch`` is the (1-based) epoch that was running and ``saved``
    the epochs the checkpoint on disk holds (None: no checkpoint was written).
    """

    def __init__(self, message: str, epoch: int | None = None, saved: int | None = None):
        super().__init__(message)
        self.epoch, self.saved = epoch, saved


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def path_argument(value: Any, name: str) -> Path | None:
    """``value`` as a Path (None stays None); anything but a str or path-like object is one NndlError line."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise NndlError(f"{name} = {_shown(value)}: expected a path (a str or pathlib.Path)")


def paths_argument(value: Any, name: str) -> list[Path]:
    """One path or a list/tuple of paths as a list of Paths (a single str is one path, never its characters)."""
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    if isinstance(value, (list, tuple)):
        return [path_argument(v, f"{name}[{i}]") for i, v in enumerate(value)]
    raise NndlError(f"{name} = {_shown(value)}: expected a path or a list of paths")


def text_argument(value: Any, name: str) -> str | None:
    """A str (or a path-like object, as str), None staying None; other types are one NndlError line."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise NndlError(f"{name} = {_shown(value)}: expected a name or a path (a str)")


def function_argument(value: Any, name: str) -> Callable | None:
    """A callable (None staying None), else one NndlError line."""
    if value is None or callable(value):
        return value
    raise NndlError(f"{name} = {_shown(value)}: expected a function (e.g. print)")
