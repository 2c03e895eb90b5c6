"""How to stack N reference CNNs (``model=cnn``) for one training step: three ways, timed.

The step is a forward and a backward pass (no optimiser) of N = 9 SmallCNNs (16/32/64 channels,
28x28 one-channel images), each on its own batch of 128 images, at one torch thread:

* ``loop``: the one-by-one baseline, N separate models (channels_last, as nndl trains them) stepped
  in a Python loop;
* ``vmap``: torch.func's model ensembling, ``vmap(functional_call)`` over the parameters and BN
  buffers stacked by ``stack_module_state`` (batch norm in training mode, running stats updated
  as batched buffers);
* ``grouped``: the N models' channels side by side in one network: each conv with ``groups=N``,
  one BatchNorm over N x C channels (per-channel statistics = per-model statistics), the head a
  batched matmul (NCHW and channels_last; all N models in one pass, or 3 or 2 per pass).

The table gives the median milliseconds per step over ``--repeats`` timings of ``--steps`` steps
and the ratio to the loop; the JSON goes to ``--out``.

    PYTHONPATH=src .venv/bin/python bench/cnn_stack_speed.py [--models 9] [--batch 128] [--steps 10]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nndl.nn.models import SmallCNN
from nndl.nn.stacked_cnn import GroupedCNN


def timed(step, steps: int, repeats: int) -> float:
    """Median milliseconds per call of ``step`` (after 2 warm-up calls: oneDNN primitive caches)."""
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t0) / steps * 1000)
    return statistics.median(times)


def make_steps(n: int, batch: int):
    torch.manual_seed(0)
    models = [SmallCNN() for _ in range(n)]
    x = torch.randn(n, batch, 1, 28, 28)
    y = torch.randint(0, 10, (n, batch))

    loop_models = [copy.deepcopy(m).to(memory_format=torch.channels_last) for m in models]
    loop_x = [x[i].contiguous(memory_format=torch.channels_last) for i in range(n)]

    def loop():
        for m, xb, yb in zip(loop_models, loop_x, y):
            m.zero_grad(set_to_none=True)
            F.cross_entropy(m(xb), yb).backward()

    from torch.func import functional_call, stack_module_state, vmap
    params, buffers = stack_module_state([copy.deepcopy(m) for m in models])
    base = copy.deepcopy(models[0]).to("meta")

    def one(p, b, xb):
        return functional_call(base, (p, b), (xb,))

    def vmapped():
        for p in params.values():
            p.grad = None
        out = vmap(one)(params, buffers, x)
        F.cross_entropy(out.reshape(-1, 10), y.reshape(-1), reduction="sum").backward()

    def grouped_step(channels_last: bool, chunk: int = 0):
        net = GroupedCNN([copy.deepcopy(m) for m in models], channels_last=channels_last, chunk=chunk)

        def step():
            for p in net.parameters():
                p.grad = None
            out = net(x)
            F.cross_entropy(out.reshape(-1, 10), y.reshape(-1), reduction="sum").backward()
        return step

    return {"loop": loop, "vmap": vmapped, "grouped (NCHW)": grouped_step(False),
            "grouped (channels_last)": grouped_step(True),
            "grouped (cl, 3 per pass)": grouped_step(True, 3), "grouped (cl, 2 per pass)": grouped_step(True, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=9)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/cnn_stack_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for name, step in make_steps(args.models, args.batch).items():
        rows[name] = timed(step, args.steps, args.repeats)
    base = rows["loop"]
    print(f"{args.models} SmallCNNs, batch {args.batch} each, 28x28, forward+backward, {args.threads} thread(s)")
    print(f"{'way':<26}{'ms/step':>10}{'vs loop':>10}")
    for name, ms in rows.items():
        print(f"{name:<26}{ms:>10.1f}{ms / base:>10.2f}")
    out = {"models": args.models, "batch": args.batch, "threads": args.threads, "steps": args.steps,
           "repeats": args.repeats, "torch": torch.__version__, "ms_per_step": rows,
           "ratio_to_loop": {k: v / base for k, v in rows.items()}}
    try:
        from nndl.tools.bench import hardware
        out["hardware"] = hardware()
    except Exception:  # the bench runs without it
        pass
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
