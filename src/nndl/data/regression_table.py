"""Regression data: a strict CSV reader and the bundled synthetic data set."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from nndl.base.errors import NndlError
from nndl.data.readers import is_header, parse_cell, read_rows


@dataclass
class RegressionData:
    """Inputs ``x`` (N, D) and target ``y`` (N,) as float32 arrays, with column names."""

    x: np.ndarray
    y: np.ndarray
    x_names: list[str]
    y_name: str
    path: str
    has_header: bool = True


BUNDLED_PREFIX = "bundled:"  # config paths like "bundled:regression_train.csv" name files shipped inside nndl


def bundled_path(name: str) -> Path:
    """The file ``name`` of the data bundled with nndl (``nndl/data/bundled/``), wherever nndl is installed."""
    return Path(str(resources.files("nndl.data") / "bundled" / name))


def resolve_data_path(path: str | Path) -> Path:
    """A user path as given, or the shipped file for a ``bundled:NAME`` path (see :func:`bundled_path`)."""
    text = str(path)
    return bundled_path(text[len(BUNDLED_PREFIX):]) if text.startswith(BUNDLED_PREFIX) else Path(path)


def read_table(path: str | Path) -> tuple[np.ndarray, list[str], bool]:
    """Read a CSV of numbers strictly: ``(values (N, C) float64, column names, has_header)``.

    A first row with no numeric cell is a header (otherwise columns are named ``col0, col1,
    ...``; a first row mixing both is refused, see :func:`is_header`). Raises :class:`NndlError`
    naming the file and row/column for an unreadable or empty file, a ragged row, or a
    non-numeric or non-finite cell.
    """
    shown = path
    rows = read_rows(resolve_data_path(path), shown, "rows of numbers, e.g. 'x,y' then '0.5,1.2'")
    has_header = is_header(rows[0], shown)
    header = [c.strip() for c in rows[0]] if has_header else [f"col{i}" for i in range(len(rows[0]))]
    repeated = [name for name, n in Counter(header).items() if n > 1]
    if repeated:
        raise NndlError(f"{shown}: column name '{repeated[0]}' appears {Counter(header)[repeated[0]]} times in the "
                        "header; give every column its own name")
    first_data_line = 2 if has_header else 1
    body = rows[1:] if has_header else rows
    if not body:
        raise NndlError(f"{shown}: has a header but no data rows")
    values = np.empty((len(body), len(header)), dtype=np.float64)
    for i, row in enumerate(body):
        line = i + first_data_line
        if len(row) != len(header):
            raise NndlError(f"{shown}: row {line} has {len(row)} columns, expected {len(header)}; fix or remove that row")
        for j, cell in enumerate(row):
            values[i, j] = parse_cell(cell, shown, line, header[j])
    return values, header, has_header


def read_csv(path: str | Path, x_cols: list[str] | None = None, y_col: str = "") -> RegressionData:
    """Read a CSV of numeric columns into inputs and a target.

    A first row without numbers is a header (see :func:`is_header`). Without ``x_cols``/``y_col``
    the last column is the target and all others are inputs.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    x_cols : list of str, optional
        Input columns by header name.
    y_col : str, optional
        Target column by header name.

    Returns
    -------
    RegressionData

    Raises
    ------
    NndlError
        One line naming the file, row/column and the fix, for an unreadable or empty
        file, a ragged row, a non-numeric or non-finite cell, or an unknown column.
    """
    values, header, has_header = read_table(path)
    if len(header) < 2:
        raise NndlError(f"{path}: needs at least two columns (inputs, then the target)")

    def index_of(name: str) -> int:
        if not has_header:
            raise NndlError(f"{path}: has no header row, so column '{name}' cannot be found; "
                            "add a header or drop --x-cols/--y-col")
        if name not in header:
            raise NndlError(f"{path}: no column named '{name}'; columns are {', '.join(header)}")
        return header.index(name)

    y_idx = index_of(y_col) if y_col else len(header) - 1
    x_idx = [index_of(c) for c in x_cols] if x_cols else [j for j in range(len(header)) if j != y_idx]
    if y_idx in x_idx:
        raise NndlError(f"{path}: column '{header[y_idx]}' is both an input and the target")
    if len(set(x_idx)) != len(x_idx):
        raise NndlError(f"{path}: an input column is named twice in --x-cols; name each once")
    return RegressionData(x=values[:, x_idx].astype(np.float32), y=values[:, y_idx].astype(np.float32),
                          x_names=[header[j] for j in x_idx], y_name=header[y_idx], path=str(path),
                          has_header=has_header)


# --- bundled synthetic data -------------------------------------------------
GAPS = [(-3.0, -1.0), (1.7, 3.1)]
DOMAIN = (-5.0, 5.0)


def target_function(x: np.ndarray) -> np.ndarray:
    """The smooth, non-polynomial function behind the bundled data."""
    return np.sin(1.3 * x) * 2.0 + 0.25 * x + np.exp(-0.5 * (x - 0.5) ** 2)


def make_synthetic(seed: int = 2024, n_train: int = 100, n_test: int = 100,
                   train_noise: float = 0.5, test_noise: float = 0.1):
    """Generate the bundled regression set.

    Training inputs are drawn uniformly from three clusters that leave the two
    :data:`GAPS` empty (points per cluster proportional to its width), with
    noise ``train_noise``; test inputs are uniform over the whole domain, gaps
    included, with smaller noise ``test_noise``.

    Returns
    -------
    (x_train, y_train, x_test, y_test) : tuple of float64 arrays, sorted by x
    """
    rng = np.random.default_rng(seed)
    edges = [DOMAIN[0], GAPS[0][0], GAPS[0][1], GAPS[1][0], GAPS[1][1], DOMAIN[1]]
    clusters = [(edges[0], edges[1]), (edges[2], edges[3]), (edges[4], edges[5])]
    widths = np.array([b - a for a, b in clusters])
    counts = np.floor(n_train * widths / widths.sum()).astype(int)
    counts[np.argmax(widths)] += n_train - counts.sum()
    x_train = np.sort(np.concatenate([rng.uniform(a, b, n) for (a, b), n in zip(clusters, counts)]))
    y_train = target_function(x_train) + rng.normal(0, train_noise, n_train)
    x_test = np.sort(rng.uniform(*DOMAIN, n_test))
    y_test = target_function(x_test) + rng.normal(0, test_noise, n_test)
    return x_train, y_train, x_test, y_test


def write_xy_csv(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write an ``x,y`` CSV with 6 decimals."""
    with open(path, "w", newline="") as fh:
        fh.write("x,y\n")
        for a, b in zip(x, y):
            fh.write(f"{a:.6f},{b:.6f}\n")
