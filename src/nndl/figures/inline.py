"""Figures that show themselves in a notebook, whether or not pyplot was ever imported.

A bare ``matplotlib.figure.Figure`` has no rich display of its own: Jupyter draws it only once
pyplot's inline backend has registered a formatter, so in a fresh kernel ``run.figure("losses")``
printed ``<Figure size 700x400 with 1 Axes>``. These figures carry ``_repr_png_``. Imported
only where a figure is drawn (matplotlib is not light).
"""
from __future__ import annotations

import io

from matplotlib.figure import Figure


class InlineFigure(Figure):
    """A ``matplotlib.figure.Figure`` that Jupyter displays as a PNG (``_repr_png_``), pyplot or not."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def inline_figure(**kwargs) -> InlineFigure:
    """A new figure (``Figure(**kwargs)``: ``figsize``, ``dpi``, ...) that displays itself inline in Jupyter."""
    return InlineFigure(**kwargs)
