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

``--cv`` adds the end-to-end row: the ``cnn`` preset's grid lr x weight decay (3 x 3) cross-validated
(3-fold) on a ``--subset`` of Fashion-MNIST for ``--epochs``, once one by one (the task's
``cross_validate`` per config) and once as one stack of all 27 fold models (``cross_validate_stacked``,
what ``nndl tune classify --batch-trials 9`` runs): seconds of each, and how far each fold model's
validation accuracy and loss and each config's CV score lie apart.

    PYTHONPATH=src .venv/bin/python bench/cnn_stack_speed.py [--models 9] [--batch 128] [--steps 10]
    PYTHONPATH=src .venv/bin/python bench/cnn_stack_speed.py --cv [--subset 2000] [--epochs 2]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nndl.nn.models import SmallCNN
from nndl.nn.stacked_cnn import GroupedCNN

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_layout import median_step_seconds  # noqa: E402 - the bench scripts' one step timer


def timed(step, steps: int, repeats: int) -> float:
    """Median milliseconds per call of ``step`` (after 2 warm-up calls: oneDNN primitive caches)."""
    return median_step_seconds(step, steps, repeats, warmup=2) * 1000


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


def cv_row(subset: int, epochs: int, folds: int = 3) -> dict:
    """The cnn preset's 3 x 3 grid cross-validated one by one and stacked: seconds and agreement."""
    from nndl.base import config as config_mod
    from nndl.tasks.classify.task import TASK, load_dataset

    grid = [{"lr": lr, "weight_decay": wd} for lr in (3e-4, 1e-3, 3e-3) for wd in (0.0, 1e-4, 1e-3)]
    cfgs = [config_mod.resolve("classify", "cnn", {"subset": subset, "epochs": epochs, "reference": "none", **g}, 0)
            for g in grid]
    ds = load_dataset(cfgs[0])
    t0 = time.perf_counter()
    alone = [TASK.cross_validate(c, ds, folds) for c in cfgs]
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    stacked = TASK.cross_validate_stacked(cfgs, ds, folds)
    t_stacked = time.perf_counter() - t0
    acc = [abs(s["val_accuracy"] - a["val_accuracy"]) for ss, aa in zip(stacked, alone) for s, a in zip(ss, aa)]
    loss = [abs(s["val_loss"] / a["val_loss"] - 1) for ss, aa in zip(stacked, alone) for s, a in zip(ss, aa)]
    mean = lambda fs: sum(f["score"] for f in fs) / len(fs)  # noqa: E731
    cv = [abs(mean(ss) - mean(aa)) for ss, aa in zip(stacked, alone)]
    rank = lambda runs: sorted(range(len(runs)), key=lambda i: -mean(runs[i]))  # noqa: E731
    return {"grid": grid, "subset": subset, "epochs": epochs, "folds": folds, "fold_models": len(acc),
            "seconds_one_by_one": t_alone, "seconds_stacked": t_stacked, "speedup": t_alone / t_stacked,
            "max_abs_val_accuracy_diff": max(acc), "fold_models_with_equal_val_accuracy": sum(a < 1e-6 for a in acc),
            "max_rel_val_loss_diff": max(loss), "max_abs_cv_score_diff": max(cv),
            "same_ranking": rank(stacked) == rank(alone), "cv_scores_one_by_one": [mean(a) for a in alone],
            "cv_scores_stacked": [mean(s) for s in stacked]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=9)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cv", action="store_true", help="also the cnn preset's 3x3 grid, 3-fold, stacked vs one by one")
    ap.add_argument("--subset", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--no-steps", action="store_true", help="skip the step timings (with --cv)")
    ap.add_argument("--out", default="bench/results/cnn_stack_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    if not args.no_steps:
        out.update(step_table(args))
    if args.cv:
        row = cv_row(args.subset, args.epochs)
        out["cv"] = {**row, "threads": args.threads}
        print(f"cnn preset, lr x weight decay 3x3, 3-fold, {args.subset} images, {args.epochs} epochs, "
              f"{args.threads} thread(s): one by one {row['seconds_one_by_one']:.1f} s, stacked "
              f"{row['seconds_stacked']:.1f} s ({row['speedup']:.2f}x); fold val accuracy max |diff| "
              f"{row['max_abs_val_accuracy_diff']:.4f} ({row['fold_models_with_equal_val_accuracy']}/"
              f"{row['fold_models']} equal), CV score max |diff| {row['max_abs_cv_score_diff']:.4f}, "
              f"same ranking: {row['same_ranking']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


def step_table(args) -> dict:
    """The per-step timings of the four ways, printed as a table."""
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
    return out


if __name__ == "__main__":
    main()
