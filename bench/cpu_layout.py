"""Memory layout of the reference CNN's training step: NCHW (PyTorch's default) vs channels_last.

Why nndl trains conv models in channels_last on CPU as well as CUDA: oneDNN's convolutions,
batch norm and pooling work in NHWC natively, so the default layout pays for reorders.
Both layouts run in this one process on the same random batch; the table gives seconds
per 60,000-image epoch (extrapolated from timed steps) and the ratio to NCHW.

    .venv/bin/python bench/cpu_layout.py [--steps 40] [--batch 256] [--compile] [--out bench/results/cpu_layout.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nndl.tools.bench import hardware
from nndl.nn.models import SmallCNN


def seconds_per_epoch(layout: torch.memory_format, batch: int, steps: int, compile_model: bool,
                      repeats: int = 3) -> float:
    """Median over ``repeats`` of the time of ``steps`` Adam steps, scaled to one 60k-image epoch."""
    torch.manual_seed(0)
    model = SmallCNN().to(memory_format=layout)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compile_model else model

    def step():
        loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return median_step_seconds(step, steps, repeats, warmup=3) * 60000 / batch  # warm-up: oneDNN caches, compile


def median_step_seconds(step, steps: int, repeats: int, warmup: int) -> float:
    """Median over ``repeats`` of the seconds per call of ``step`` (``steps`` calls each), after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd variants")
    ap.add_argument("--out", default="bench/results/cpu_layout.json")
    args = ap.parse_args()
    variants = [("nchw", torch.contiguous_format, False), ("channels_last", torch.channels_last, False)]
    if args.compile:
        variants += [("nchw+compile", torch.contiguous_format, True),
                     ("channels_last+compile", torch.channels_last, True)]
    rows = [{"layout": name, "sec_per_epoch": seconds_per_epoch(fmt, args.batch, args.steps, comp)}
            for name, fmt, comp in variants]
    base = rows[0]["sec_per_epoch"]
    print(f"{'layout':<24}{'s/epoch':>10}{'speedup':>10}")
    for r in rows:
        r["speedup"] = base / r["sec_per_epoch"]
        print(f"{r['layout']:<24}{r['sec_per_epoch']:>10.2f}{r['speedup']:>9.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "steps": args.steps, "rows": rows,
                               "hardware": hardware(torch.device("cpu")), "torch": torch.__version__}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
