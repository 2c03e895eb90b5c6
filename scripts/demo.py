"""`make demo`: the tour of nndl on 2 CPU cores in a few minutes.

Regression with 5-fold CV (both presets) on the bundled data, a short
Fashion-MNIST CNN run, a tiny hyperparameter search, and an HTML report for
each. Every step writes a run folder under runs/demo-* (replaced on each demo).
"""
from __future__ import annotations

import shutil
import sys
import time

import nndl
from nndl.base.errors import NndlError


def main() -> int:
    t0 = time.perf_counter()
    results = {}
    try:
        for preset in ("seed", "smooth"):
            print(f"\n=== regression, preset '{preset}' ===")
            results[f"regress/{preset}"] = nndl.regress(preset=preset, out=f"runs/demo-regress-{preset}", overwrite=True)
        print("\n=== Fashion-MNIST, preset 'cnn' on 30,000 training images, 4 epochs ===")
        results["classify/cnn"] = nndl.classify(preset="cnn", overrides={"subset": 30000, "epochs": 4},
                                                out="runs/demo-classify-cnn", overwrite=True)
        print("\n=== hyperparameter search: 8 TPE trials, 5-fold CV, examples/spaces/regress.toml ===")
        shutil.rmtree("runs/demo-tune", ignore_errors=True)  # the demo's own folder: start the study afresh
        study = nndl.tune("regress", "examples/spaces/regress.toml", trials=8, folds=5, seed=0, out="runs/demo-tune")
    except NndlError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    print(f"\n=== demo finished in {time.perf_counter() - t0:.0f} s ===")
    for name, m in results.items():
        headline = (f"test MSE {m['test_mse']:.4f} (val {m['val_mse']:.4f} ± {m['val_mse_std']:.4f})"
                    if "test_mse" in m else f"test accuracy {m['test_accuracy']:.4f}")
        print(f"{name:<16} {headline:<44} {m['run_dir']}/report.html")
    best = study['best'] or {}
    print(f"{'tune/regress':<16} {'best val MSE ' + format(best.get('value', float('nan')), '.4f'):<44} "
          "runs/demo-tune/report.html")
    print("\nopen any report.html in a browser; the search's report is runs/demo-tune/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
