"""Seconds of a run's reference GP (nndl.tasks.regress.reference) at 100-500 training rows: one fit, and the fit plus
the 5 fold refits a run makes for ``reference_val_mse``. One input column, x uniform on [-5, 5], the
bundled set's target function plus noise 0.3. Timings on a shared machine are rough.

    PYTHONPATH=src .venv/bin/python bench/reference_timing.py
"""
import time

import numpy as np

from nndl.tasks.regress import reference
from nndl.data.regression_table import target_function


def main() -> None:
    rng = np.random.default_rng(0)
    reference.fit_gp(np.zeros((3, 1)) + [[0.0], [1.0], [2.0]], np.arange(3.0))  # imports and warm-up, untimed
    for rows in (100, 300, 500):
        x = rng.uniform(-5, 5, (rows, 1))
        y = target_function(x[:, 0]) + 0.3 * rng.normal(size=rows)
        t0 = time.perf_counter()
        reference.fit_gp(x, y)
        fit = time.perf_counter() - t0
        folds = np.array_split(rng.permutation(rows), 5)
        t0 = time.perf_counter()
        reference.fit_for_run("gp", x, y, folds)
        print(f"{rows} rows: fit {fit:.2f} s, fit + 5 fold refits {time.perf_counter() - t0:.2f} s", flush=True)


if __name__ == "__main__":
    main()
