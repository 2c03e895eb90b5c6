"""Regenerate the bundled regression data: `python data/regression/generate.py`.

The files ship inside the package (src/nndl/data/bundled/regression_{train,test}.csv), so
`nndl regress` finds them from any folder after a plain `pip install`.

Seeded and deterministic: the function, the gaps and the noise levels are in
nndl.data.regression_table (target_function, GAPS, make_synthetic). A test checks the
committed CSVs equal this script's output.
"""
from pathlib import Path

from nndl.data.regression_table import make_synthetic, write_xy_csv

if __name__ == "__main__":
    here = Path(__file__).resolve().parents[2] / "src/nndl/data/bundled"
    train, test = here / "regression_train.csv", here / "regression_test.csv"
    x_train, y_train, x_test, y_test = make_synthetic(seed=2024)
    write_xy_csv(train, x_train, y_train)
    write_xy_csv(test, x_test, y_test)
    print(f"wrote {train} ({len(x_train)} rows) and {test} ({len(x_test)} rows)")
