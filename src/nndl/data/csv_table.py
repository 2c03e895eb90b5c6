"""Classification from a CSV table: one class column, numeric feature columns -> an MLP.

The file needs a header row. The class column is ``label_col`` (``--label-col``; default a
column named ``label``); its values may be words (``setosa``) or numbers, and the class
names are its distinct values, sorted (numerically when they are all numbers). Every other
column is a feature and must be numeric (the strict rules of
:func:`nndl.data.regression_table.read_table`: finite, float32-sized). A stratified, seeded test
split (``test_fraction``) is drawn, unless ``test_data`` names a test file with the same columns (then
every row of ``data`` trains); features are standardised with the training rows' mean and std.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nndl.data.readers import is_number, parse_cell, read_rows
from nndl.base.errors import NndlError
from nndl.data import Dataset, check_classes, stratified_test_split

NAME = "csv_table"
PREDICT_INPUT = "table"
READS = ("label_col", "test_fraction", "test_data")  # of datasets.DATASET_SETTINGS


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv"


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data rows (blank lines skipped) of a CSV that must have a header."""
    rows = read_rows(path, needs="a header row, then one row per example")
    header = [c.strip() for c in rows[0]]
    numbers = [c for c in header if is_number(c)]
    if numbers:  # a header names columns; a number in row 1 means the row is data (or a name to change)
        raise NndlError(f"{path}: no header row (row 1 holds the number '{numbers[0]}'); add one naming the columns "
                        "(e.g. 'length,width,species'), none of them a number")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise NndlError(f"{path}: column name '{dup}' appears more than once in the header; give each its own name")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise NndlError(f"{path}: row {i} has {len(row)} columns, expected {len(header)}; fix or remove that row")
    return header, rows[1:]


def _features(path: Path, header: list[str], body: list[list[str]], names: list[str]) -> np.ndarray:
    idx = [header.index(n) for n in names]
    out = np.empty((len(body), len(idx)), dtype=np.float32)
    for i, row in enumerate(body):
        for k, j in enumerate(idx):
            out[i, k] = parse_cell(row[j], path, i + 2, header[j])
    return out


def load(cfg) -> Dataset:
    """Read the table, split it (stratified, seeded) and standardise on the training rows."""
    path = Path(cfg.data).expanduser()
    header, body = _rows(path)
    label = cfg.label_col or "label"
    if label not in header:
        how = f"no column '{label}'" if cfg.label_col else "no column named 'label'"
        raise NndlError(f"{path}: {how}; columns are {', '.join(header)}: name the class column with "
                        "--label-col NAME (or --set label_col=NAME)")
    if not body:
        raise NndlError(f"{path}: a header but no data rows")
    features = [h for h in header if h != label]
    if not features:
        raise NndlError(f"{path}: only the class column '{label}'; add numeric feature columns")
    j = header.index(label)
    raw = [row[j].strip() for row in body]
    blank = next((i for i, v in enumerate(raw) if not v), None)
    if blank is not None:
        raise NndlError(f"{path}: row {blank + 2}: empty '{label}'; give every row a class or remove it")
    values = sorted(set(raw), key=lambda v: (float(v), v) if all(is_number(u) for u in raw) else (0.0, v))
    x = torch.from_numpy(_features(path, header, body, features))
    y = torch.tensor([values.index(v) for v in raw], dtype=torch.int64)
    check_classes(y, values, f"{path} column '{label}'")
    if cfg.test_data:
        if cfg.test_fraction not in (0, type(cfg)().test_fraction):  # no split is drawn: say so, never ignore it
            raise NndlError(f"config key 'test_fraction' = {cfg.test_fraction!r} does not apply with a test file "
                            f"({cfg.test_data}): every row of {path} trains; remove it (or set it to 0)")
        x_train, y_train = x, y
        x_test, y_test = _test_file(Path(cfg.test_data).expanduser(), path, header, label, features, values)
    else:
        tr, te = stratified_test_split(y, cfg.test_fraction, cfg.seed, str(path))
        x_train, y_train, x_test, y_test = x[tr], y[tr], x[te], y[te]
    mean = x_train.double().mean(0)
    std = x_train.double().std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column passes through unscaled
    return Dataset(NAME, x_train, y_train, x_test, y_test, (len(features),), values, mean.tolist(), std.tolist(),
                   str(path), feature_names=features)


def _test_file(path: Path, train_path: Path, train_header: list[str], label: str, features: list[str],
               classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of a table's own test file: the training file's columns (any order), its classes."""
    if not path.is_file():
        raise NndlError(f"--test {path}: no such file; give a CSV test file with the columns of {train_path}")
    header, body = _rows(path)
    missing = next((c for c in train_header if c not in header), None)
    extra = next((c for c in header if c not in train_header), None)
    if missing is not None or extra is not None:
        problem = (f"no column '{missing}' (the training file {train_path} has it)" if missing is not None
                   else f"column '{extra}' is not in the training file {train_path}")
        raise NndlError(f"{path}: {problem}; give the test file the training file's columns "
                        f"({', '.join(train_header)})")
    if not body:
        raise NndlError(f"{path}: a header but no data rows")
    j = header.index(label)
    raw = [row[j].strip() for row in body]
    unknown = next((i for i, v in enumerate(raw) if v not in classes), None)
    if unknown is not None:
        raise NndlError(f"{path}: row {unknown + 2}: class '{raw[unknown]}' of column '{label}' is not in the "
                        f"training file {train_path} (classes {', '.join(classes)})")
    x = torch.from_numpy(_features(path, header, body, features))
    return x, torch.tensor([classes.index(v) for v in raw], dtype=torch.int64)


def read_inputs(path: str | Path, feature_names: list[str], class_names: list[str]):
    """Rows of a CSV for prediction, read by column name: ``(float32 (N, F), labels (N,) or None)``.

    The class column is optional (its values become ``labels`` indices when they are known
    class names); other extra columns are ignored.
    """
    path = Path(path)
    header, body = _rows(path)
    missing = [n for n in feature_names if n not in header]
    if missing:
        raise NndlError(f"{path}: no column '{missing[0]}'; the model was trained on the columns "
                        f"{', '.join(feature_names)}; rename the header to match")
    if not body:
        raise NndlError(f"{path}: a header but no data rows")
    x = _features(path, header, body, feature_names)
    rest = [h for h in header if h not in feature_names]
    labels = None
    if len(rest) == 1:
        vals = [row[header.index(rest[0])].strip() for row in body]
        if all(v in class_names for v in vals):
            labels = np.array([class_names.index(v) for v in vals])
    return x, labels
