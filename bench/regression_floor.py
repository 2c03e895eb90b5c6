"""How fast can the seed preset's 5-fold CV be on this machine? Its arithmetic floor beside the plain
loop and nndl's batched path, measured in one process, quiet machine.

The seed net is 1-128-256-1 (sigmoid); 5 folds x 600 full-batch epochs of 80 rows. Almost all its
arithmetic is the 128x256 layer: per epoch and model, its forward product, the gradient of its input
and the gradient of its weight (three 80x128x256 matrix products). The floor times exactly those
products for the 5 fold models as three batched products per epoch, with nothing else: no other
layer, no activation, no optimiser, no validation. No implementation of this CV that keeps its
arithmetic can be faster than that on the same cores. A second row times bare autograd training
steps of the stacked models (layers, sigmoids, MSE, backward; no optimiser, validation or shuffling):
what any autograd implementation pays before its own bookkeeping.

    .venv/bin/python bench/regression_floor.py   # -> bench/results/regression_floor.json

Also timed: ``import torch`` in a fresh interpreter (every ``nndl regress`` pays it before any work).
"""
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from nndl.base import config as config_mod
from nndl.tools.bench import hardware, regression_typical, time_seed_cv
from nndl.tasks import get_task

EPOCHS, FOLDS, ROWS, WIDTHS = 600, 5, 80, (128, 256)


@contextlib.contextmanager
def torch_threads(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def layer2_products(threads: int) -> float:
    """Seconds of the 128x256 layer's three products for 5 models x 600 epochs, ``threads`` threads."""
    with torch_threads(threads):
        h = torch.rand(FOLDS, ROWS, WIDTHS[0])
        w = torch.randn(FOLDS, *WIDTHS)
        grad = torch.randn(FOLDS, ROWS, WIDTHS[1])
        for _ in range(50):  # warm the kernels and the thread pool
            torch.bmm(h, w)
        t0 = time.perf_counter()
        for _ in range(EPOCHS):
            torch.bmm(h, w)  # forward
            torch.bmm(grad, w.transpose(1, 2))  # gradient of the layer's input
            torch.bmm(h.transpose(1, 2), grad)  # gradient of its weight
        return time.perf_counter() - t0


def bare_training_steps(threads: int) -> float:
    """Seconds of 600 bare training steps of the 5 stacked fold models: the three batched layers,
    sigmoids, the MSE and its backward; no optimiser, validation, shuffling or bookkeeping."""
    with torch_threads(threads):
        sizes = (1, *WIDTHS, 1)
        weights = [torch.randn(FOLDS, a, b).mul_(a ** -0.5).requires_grad_() for a, b in zip(sizes, sizes[1:])]
        biases = [torch.zeros(FOLDS, 1, b, requires_grad=True) for b in sizes[1:]]
        x, y = torch.rand(FOLDS, ROWS, 1), torch.randn(FOLDS, ROWS, 1)
        for step in range(EPOCHS + 50):  # 50 warm-up steps
            if step == 50:
                t0 = time.perf_counter()
            h = x
            for i, (w, b) in enumerate(zip(weights, biases)):
                h = torch.baddbmm(b, h, w)
                h = torch.sigmoid(h) if i < len(weights) - 1 else h
            torch.nn.functional.mse_loss(h, y).backward()
        return time.perf_counter() - t0


def import_torch_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - t0


def main(repeats: int = 3) -> None:
    setup = get_task("regress").setup(config_mod.resolve("regress", "seed", {}), None, torch.device("cpu"))
    runs: dict[str, list[float]] = {"typical loop": [], "nndl batched": [], "floor, 1 thread": [],
                                    "floor, 2 threads": [], "bare steps, 2 threads": [],
                                    "import torch": []}
    for _ in range(repeats):
        runs["typical loop"].append(regression_typical(setup.x, setup.y, EPOCHS, FOLDS)["seconds"])
        runs["nndl batched"].append(time_seed_cv(torch.device("cpu"), epochs=EPOCHS)["seconds"])
        runs["floor, 1 thread"].append(layer2_products(1))
        runs["floor, 2 threads"].append(layer2_products(2))
        runs["bare steps, 2 threads"].append(bare_training_steps(2))
        runs["import torch"].append(import_torch_seconds())
    gflop = 3 * 2 * FOLDS * ROWS * WIDTHS[0] * WIDTHS[1] * EPOCHS / 1e9
    typical = statistics.median(runs["typical loop"])
    result = {"hardware": hardware(torch.device("cpu")), "torch": torch.__version__, "repeats": repeats,
              "layer2_gflop": gflop, "seconds": {k: [round(v, 3) for v in vs] for k, vs in runs.items()},
              "typical_over": {k: round(typical / statistics.median(vs), 2) for k, vs in runs.items()
                               if k != "import torch"}}
    width = max(map(len, runs))
    print(f"{result['hardware']}; seed preset CV, {FOLDS} folds x {EPOCHS} epochs; the 128x256 layer's "
          f"products are {gflop:.1f} GFLOP")
    for name, seconds in result["seconds"].items():
        ratio = result["typical_over"].get(name)
        print(f"  {name:<{width}}  {' / '.join(f'{s:.3f}' for s in seconds)} s"
              + (f"   typical / this = {ratio:.2f}x" if ratio else ""))
    out = Path(__file__).parent / "results" / "regression_floor.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
