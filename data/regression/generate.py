"""Regenerate the bundled regression data: `python data/regression/generate.py`.

Seeded and deterministic: the function, the gaps and the noise levels are in
nndl.data.regression (target_function, GAPS, make_synthetic). A test checks the
committed CSVs equal this script's output.
"""
from pathlib import Path

from nndl.data.regression import make_synthetic, write_xy_csv

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    x_train, y_train, x_test, y_test = make_synthetic(seed=2024)
    write_xy_csv(here / "train.csv", x_train, y_train)
    write_xy_csv(here / "test.csv", x_test, y_test)
    print(f"wrote {here / 'train.csv'} ({len(x_train)} rows) and {here / 'test.csv'} ({len(x_test)} rows)")
