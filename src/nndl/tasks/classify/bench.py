"""The classification rows of ``nndl bench`` (:mod:`nndl.tools.bench`): time-to-accuracy and seconds per epoch.

(a) ``typical``: a per-sample ``Dataset`` + ``DataLoader`` (batch 256, shuffled), Adam, the
    ``cnn`` preset's network, evaluated with a DataLoader too -- the notebook this replaces;
(b) nndl's ``cnn`` preset; (c) nndl's ``fast`` preset; (c') nndl's ``speed`` preset over seeds.

Training time excludes evaluation. Time to X% is the training time up to the end of the
first epoch whose test accuracy reaches X% (the test set is the per-epoch yardstick here,
as in speed-run records; ``nndl classify`` itself never looks at it before the end). Times to X%
are also given in epochs of the typical loop measured in the same run (``typical_epochs_to_X``), the
unit that carries across machines.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from nndl.base import config as config_mod
from nndl.data.fashion import FashionData
from nndl.data.fashion_mnist import MEAN, STD  # the notebook baseline normalises as Fashion-MNIST runs do
from nndl.nn.models import SmallCNN
from nndl.tasks.classify.task import classifier_on, transform_for
from nndl.training.trainer import train

THRESHOLDS = (0.91, 0.93, 0.935, 0.94, 0.945)


def threshold_key(t: float) -> str:
    """``time_to_91``, ``time_to_93.5``: the row key of the time to test accuracy ``t``."""
    return f"time_to_{t * 100:g}"


class _PerSampleFashion(Dataset):
    """What a typical notebook writes: one normalised image tensor per ``__getitem__``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        x = (self.images[i].float() / 255 - MEAN) / STD
        return x.unsqueeze(0), int(self.labels[i])


def typical_loop(data: FashionData, epochs: int, device: torch.device, seed: int = 0,
                 n_train: int = 0, n_test: int = 0) -> list[dict]:
    """Train the reference CNN the notebook way; one dict per epoch (train seconds, test accuracy)."""
    torch.manual_seed(seed)
    n_train = n_train or len(data.train_labels)
    n_test = n_test or len(data.test_labels)
    train_loader = DataLoader(_PerSampleFashion(data.train_images[:n_train], data.train_labels[:n_train]),
                              batch_size=256, shuffle=True)
    test_loader = DataLoader(_PerSampleFashion(data.test_images[:n_test], data.test_labels[:n_test]), batch_size=1000)
    model = SmallCNN().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rows = []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for xb, yb in train_loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in test_loader:
                correct += (model(xb.to(device)).argmax(1).cpu() == yb).sum().item()
        rows.append({"epoch": epoch + 1, "train_seconds": seconds, "test_acc": correct / n_test})
    return rows


def nndl_run(data: FashionData, preset: str, device: torch.device, overrides: dict[str, Any] | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Train an nndl preset with the test set as the per-epoch yardstick; epochs + compile time."""
    cfg = config_mod.resolve("classify", preset, {"val_fraction": 0.0, **(overrides or {})}, seed)
    n_train = cfg.subset or len(data.train_labels)
    n_test = cfg.test_subset or len(data.test_labels)
    x = data.train_images[:n_train].to(device)
    y = data.train_labels[:n_train].long().to(device)
    xt = data.test_images[:n_test].to(device)
    yt = data.test_labels[:n_test].long().to(device)
    torch.manual_seed(seed)
    model = classifier_on(cfg, device)
    res = train(model, x, y, cfg, task="classification", x_val=xt, y_val=yt, transform=transform_for(cfg, device),
                progress=False)
    rows = [{"epoch": r["epoch"], "train_seconds": r["seconds"] - r["eval_seconds"], "test_acc": r["val_acc"]}
            for r in res.history]
    return {"rows": rows, "compile_seconds": res.compile_seconds}


def preset_row(data: FashionData, preset: str, device: torch.device, sizes: dict[str, int], runs: int,
               typical_seconds: float | None, echo=print) -> dict[str, Any]:
    """One bench row: ``preset`` trained with seeds 0 .. runs-1 (:func:`over_seeds`), a line per seed
    as it finishes (long presets take minutes each)."""
    summaries = []
    for seed in range(runs):
        run = nndl_run(data, preset, device, sizes, seed=seed)
        summaries.append(summarise(preset, run["rows"], {"compile_seconds": run["compile_seconds"]}))
        echo(f"    {preset} seed {seed}: {summaries[-1]['final_test_acc']:.4f} after "
             f"{summaries[-1]['train_seconds']:.1f} s of training")
    row = over_seeds(preset, summaries, typical_seconds)
    echo(f"  {preset + ':':<8} {row['final_test_acc']:.4f} ± {row['final_test_acc_std']:.4f} over {runs} seed(s)")
    return row


def summarise(name: str, rows: list[dict], extra: dict | None = None) -> dict[str, Any]:
    """Seconds per epoch (median), final accuracy, and time to each accuracy threshold."""
    out = {"name": name, "epochs": len(rows), "sec_per_epoch": statistics.median(r["train_seconds"] for r in rows),
           "final_test_acc": rows[-1]["test_acc"], "train_seconds": sum(r["train_seconds"] for r in rows),
           "test_acc_by_epoch": [r["test_acc"] for r in rows]}  # the whole curve, for plots and other thresholds
    elapsed = 0.0
    reached: dict[str, float | None] = {threshold_key(t): None for t in THRESHOLDS}
    for r in rows:
        elapsed += r["train_seconds"]
        for t in THRESHOLDS:
            key = threshold_key(t)
            if reached[key] is None and r["test_acc"] >= t:
                reached[key] = elapsed
    return {**out, **reached, **(extra or {})}


def in_typical_epochs(row: dict[str, Any], typical_seconds: float | None) -> dict[str, Any]:
    """Add ``typical_epochs_to_X`` (and ``..._std`` where the row has a spread): each time to X% divided
    by one epoch of the typical loop measured in the same run (None when no typical epoch was run)."""
    for t in THRESHOLDS:
        key = threshold_key(t)
        for suffix in ("", "_std"):
            if key + suffix in row:
                seconds = row[key + suffix]
                row[f"typical_epochs_to_{t * 100:g}{suffix}"] = (
                    None if seconds is None or not typical_seconds else seconds / typical_seconds)
    return row


def over_seeds(name: str, summaries: list[dict], typical_seconds: float | None = None) -> dict[str, Any]:
    """One table row from several seeds' :func:`summarise` rows: means and population stds over seeds.

    A time to X% is the mean over seeds, and only when every seed got there (else None).
    """
    accs = [s["final_test_acc"] for s in summaries]
    row = dict(summaries[0])
    row.pop("test_acc_by_epoch", None)  # one seed's curve: each is in per_seed
    row.update({"name": name, "runs": len(summaries), "final_test_acc": statistics.mean(accs),
                "final_test_acc_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                "train_seconds": statistics.mean(s["train_seconds"] for s in summaries),
                "sec_per_epoch": statistics.mean(s["sec_per_epoch"] for s in summaries),
                "per_seed": [in_typical_epochs(s, typical_seconds) for s in summaries]})
    for t in THRESHOLDS:
        key = threshold_key(t)
        times = [s[key] for s in summaries]
        reached = None not in times
        row[key] = statistics.mean(times) if reached else None
        row[f"{key}_std"] = statistics.pstdev(times) if reached else None
    return in_typical_epochs(row, typical_seconds)


def _typical_cell(row: dict[str, Any], t: float) -> str:
    key = f"typical_epochs_to_{t * 100:g}"
    if row.get(key) is None:
        return "-"
    std = row.get(key + "_std")
    return f"{row[key]:.2f}" + (f" ± {std:.2f}" if std is not None and row.get("runs", 1) > 1 else "")


def table_lines(result: dict[str, Any]) -> list[str]:
    """The classification rows of the bench table (seconds per epoch, accuracy, time to each threshold) and,
    with a typical row, the times in its epochs."""
    def fmt(v):
        return "-" if v is None else f"{v:.1f}"

    lines = [f"{'run':<10} {'epochs':>6} {'s/epoch':>8} {'vs typical':>10} {'final acc':>9} "
             + " ".join(f"{'to ' + format(t * 100, 'g') + '%':>8}" for t in THRESHOLDS)]
    base = next((r["sec_per_epoch"] for r in result["classification"] if r["name"] == "typical"), None)
    for r in result["classification"]:
        ratio = f"{base / r['sec_per_epoch']:.2f}x" if base else "-"
        seeds = f"  (mean of {r['runs']} seeds, acc ± {r['final_test_acc_std']:.4f})" if r.get("runs", 1) > 1 else ""
        lines.append(f"{r['name']:<10} {r['epochs']:>6} {r['sec_per_epoch']:>8.2f} {ratio:>10} "
                     f"{r['final_test_acc']:>9.4f} "
                     + " ".join(f"{fmt(r.get(threshold_key(t))):>8}" for t in THRESHOLDS) + seeds)
    if base:
        lines += ["", "time to accuracy in epochs of this run's typical loop (mean ± std over seeds):",
                  f"{'run':<10} " + " ".join(f"{'to ' + format(t * 100, 'g') + '%':>14}" for t in THRESHOLDS)]
        for r in result["classification"]:
            lines.append(f"{r['name']:<10} " + " ".join(f"{_typical_cell(r, t):>14}" for t in THRESHOLDS))
    return lines
