"""Progress bars that only draw where someone watches them.

A tqdm bar redraws itself with carriage returns; written to a log file or a CI console that is
thousands of lines of noise. Bars here draw on a terminal or in a Jupyter notebook (tqdm's
widget) and stay silent otherwise; the one-line-per-epoch table still reaches logs.
"""
from __future__ import annotations

import sys
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws a widget), not in a terminal IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython without a running shell
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def bars_visible(stream: Any = None) -> bool:
    """Whether a progress bar on ``stream`` (default stderr) would be seen rather than logged."""
    stream = stream if stream is not None else sys.stderr
    try:
        return in_notebook() or bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def progress_bar(*args: Any, enabled: bool = True, **kwargs: Any):
    """``tqdm.auto.tqdm(*args, **kwargs)``, disabled unless ``enabled`` and :func:`bars_visible`."""
    from tqdm.auto import tqdm

    visible = enabled and bars_visible(kwargs.get("file"))
    return tqdm(*args, disable=not visible, **kwargs)
