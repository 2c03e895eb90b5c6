"""``nndl bench``: time-to-accuracy and seconds per epoch, nndl against a typical notebook loop.

All rows are measured in one process on one machine, so the ratios compare like with like:

(a) ``typical``: a per-sample ``Dataset`` + ``DataLoader`` (batch 256, shuffled), Adam, the
    ``cnn`` preset's network, evaluated with a DataLoader too -- the notebook this replaces;
(b) nndl's ``cnn`` preset; (c) nndl's ``fast`` preset; (c') nndl's ``speed`` preset over seeds;
(d) regression: the ``seed`` preset's 5-fold CV, folds one by one vs stacked into one model, and
    the reference GP of every 1-D run (:mod:`nndl.tasks.regress.reference`) on the same folds.

Training time excludes evaluation. Time to X% is the training time up to the end of the
first epoch whose test accuracy reaches X% (the test set is the per-epoch yardstick here,
as in speed-run records; ``nndl classify`` itself never looks at it before the end). Times to X%
are also given in epochs of the typical loop measured in the same run (``typical_epochs_to_X``), the
unit that carries across machines.
"""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from nndl.base import config as config_mod
from nndl.tasks.classify.task import classifier_on, transform_for
from nndl.training.crossval import cross_validate, cross_validate_many
from nndl.data.fashion_mnist import MEAN, STD  # the notebook baseline normalises as Fashion-MNIST runs do
from nndl.data.fashion import FashionData, load_fashion
from nndl.base.errors import NndlError
from nndl.nn.models import SmallCNN
from nndl.tasks import get_task
from nndl.runfolder.files import environment, new_run_dir, place, write_json
from nndl.training.trainer import pick_device, train

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


def regression_typical(x: torch.Tensor, y: torch.Tensor, epochs: int = 600, folds: int = 5, seed: int = 0
                       ) -> dict[str, Any]:
    """The plain student loop for the ``seed`` preset's CV: scikit-learn ``KFold(shuffle=True)``, one torch
    model per fold (1-128-256-1 sigmoid), Adam (lr 0.02, L2 1e-5), full-batch epochs, the train and
    validation loss recorded each epoch for the loss curves; torch's default thread count. Timed warm:
    the optimiser's one-off import is paid before the clock starts."""
    try:
        from sklearn.model_selection import KFold
    except ImportError:
        raise NndlError("the typical regression row needs scikit-learn: pip install scikit-learn") from None
    # The first torch.optim optimiser of a process imports torch._dynamo (~0.7 s here): a one-off a
    # user's notebook pays once, not per CV. Pay it before the clock starts so the row times the loop.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    t0 = time.perf_counter()
    vals = []
    for tr, va in KFold(folds, shuffle=True, random_state=seed).split(x.cpu().numpy()):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.Sigmoid(), torch.nn.Linear(128, 256),
                                    torch.nn.Sigmoid(), torch.nn.Linear(256, 1)).to(x.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02, weight_decay=1e-5)
        x_tr, y_tr, x_va, y_va = x[tr], y[tr], x[va], y[va]
        history = []
        for _ in range(epochs):
            loss = torch.nn.functional.mse_loss(model(x_tr).squeeze(-1), y_tr)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                history.append((loss.item(), torch.nn.functional.mse_loss(model(x_va).squeeze(-1), y_va).item()))
        vals.append(history[-1][1])
    return {"seconds": time.perf_counter() - t0, "val_mse": statistics.mean(vals), "threads": torch.get_num_threads()}


def regression_auto(device: torch.device) -> dict[str, Any]:
    """The ``auto`` preset's search and ensemble on the bundled training set: seconds and the val score."""
    from nndl.tasks.regress.task import fit_arrays

    cfg = config_mod.resolve("regress", "auto", {"test_path": ""})
    setup = get_task("regress").setup(cfg, None, device)
    x, y = setup.x, setup.y
    t0 = time.perf_counter()
    fit = fit_arrays(cfg, x, y)
    return {"seconds": time.perf_counter() - t0, "candidates": fit.extra["search_candidates"],
            "members": fit.extra["ensemble_members"], "val_mse": statistics.mean(f.val_mse for f in fit.folds),
            "splitter": cfg.splitter}


def regression_reference(device: torch.device) -> dict[str, Any] | None:
    """The reference GP (:func:`nndl.tasks.regress.reference.fit_gp`) on the bundled set: its val MSE on the ``seed``
    preset's 5 shuffled folds (the nndl rows' folds), its test MSE and seconds; None without scikit-learn."""
    from nndl.tasks.regress import reference
    from nndl.data.splits import make_splits

    if not reference.sklearn_available():
        return None
    cfg = config_mod.resolve("regress", "seed")
    data = get_task("regress").load(cfg)
    folds = make_splits(torch.as_tensor(data.train.x), cfg)
    t0 = time.perf_counter()
    fitted = reference.fit_for_run("gp", data.train.x, data.train.y, [va.numpy() for _, va in folds], cfg.seed)
    mean, _ = fitted.model.predict(data.test.x)
    return {"model": "gp", "detail": fitted.model.detail, "val_mse": fitted.val_mse, "seconds": time.perf_counter() - t0,
            "test_mse": float(((mean - data.test.y) ** 2).mean())}


def time_seed_cv(device: torch.device, **overrides) -> dict[str, Any]:
    """Seconds and mean val MSE of the ``seed`` preset's 5-fold CV with ``overrides`` (e.g. ``epochs``,
    ``batched``, ``threads``); data and model setup are not timed."""
    cfg = config_mod.resolve("regress", "seed", overrides)
    setup = get_task("regress").setup(cfg, None, device)
    t0 = time.perf_counter()
    folds = cross_validate(setup.make_model, setup.x, setup.y, cfg, batched=cfg.batched, progress=False)
    return {"seconds": time.perf_counter() - t0, "val_mse": statistics.mean(f.val_mse for f in folds)}


def regression_kfold(device: torch.device, epochs: int = 600) -> dict[str, Any]:
    """The ``seed`` preset's 5-fold CV: the plain student loop (:func:`regression_typical`), nndl one by one
    and nndl batched, same data; seconds and val MSE of each."""
    cfg = config_mod.resolve("regress", "seed", {"epochs": epochs})
    setup = get_task("regress").setup(cfg, None, device)
    out = {"typical": regression_typical(setup.x, setup.y, epochs, cfg.folds, cfg.seed),
           "sequential": time_seed_cv(device, epochs=epochs, batched=False),
           "batched": time_seed_cv(device, epochs=epochs, batched=True)}
    out["speedup"] = out["sequential"]["seconds"] / out["batched"]["seconds"]
    out["speedup_vs_typical"] = out["typical"]["seconds"] / out["batched"]["seconds"]
    return out


# One extra busy core, as a shared laptop or CI runner has: a numpy matrix product in a loop.
BUSY_PROCESS = "import numpy as np\na = np.random.rand(400, 400)\nwhile True: a @ a"


def regression_loaded(device: torch.device, epochs: int = 150) -> dict[str, Any]:
    """The ``seed`` preset's 5-fold CV while another process keeps one core busy: the plain student loop
    (torch's default threads), nndl batched under its thread policy, and nndl batched with 2 threads forced.

    Tiny steps with two spinning OpenMP threads on a shared machine wait on each other: this row
    shows what the thread policy (:func:`nndl.training.threads.thread_policy`) is for.
    """
    import os
    import subprocess
    import sys

    setup = get_task("regress").setup(config_mod.resolve("regress", "seed", {"epochs": epochs}), None, device)
    busy = subprocess.Popen([sys.executable, "-c", BUSY_PROCESS], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out: dict[str, Any] = {"epochs": epochs, "typical": regression_typical(setup.x, setup.y, epochs),
                               "batched_policy": time_seed_cv(device, epochs=epochs, threads=0),
                               "batched_2_threads": time_seed_cv(device, epochs=epochs, threads=2)}
    finally:
        busy.terminate()
        busy.wait()
    out["speedup_vs_typical"] = out["typical"]["seconds"] / out["batched_policy"]["seconds"]
    return out


def regression_search(device: torch.device, trials: int = 8, epochs: int = 600) -> dict[str, Any]:
    """A search's trials (the ``seed`` network, 5-fold CV, lr x weight decay varying) trained three ways.

    ``sequential``: every fold model of every trial one by one (the notebook way);
    ``folds_stacked``: one stack of K folds per trial (``nndl tune`` by default);
    ``trials_stacked``: all trials' folds in one stack (``nndl tune --batch-trials``). Same seeds, so the scores must agree.
    """
    lrs = [0.02 * 0.5 ** (i // 2) for i in range(trials)]
    cfgs = [config_mod.resolve("regress", "seed", {"epochs": epochs, "lr": lr, "weight_decay": 1e-5 * 10 ** (i % 2)})
            for i, lr in enumerate(lrs)]
    setups = [get_task("regress").setup(c, None, device) for c in cfgs]
    x, y = setups[0].x, setups[0].y
    factories = [s.make_model for s in setups]
    runs = {"sequential": lambda: [cross_validate(f, x, y, c, batched=False, progress=False)
                                   for f, c in zip(factories, cfgs)],
            "folds_stacked": lambda: [cross_validate(f, x, y, c, batched=True, progress=False)
                                      for f, c in zip(factories, cfgs)],
            "trials_stacked": lambda: cross_validate_many(factories, x, y, cfgs)}
    out: dict[str, Any] = {"trials": trials, "epochs": epochs}
    for name, run in runs.items():
        t0 = time.perf_counter()
        scores = [statistics.mean(f.val_mse for f in folds) for folds in run()]
        out[name] = {"seconds": time.perf_counter() - t0, "val_mse": scores}
    out["speedup_vs_sequential"] = out["sequential"]["seconds"] / out["trials_stacked"]["seconds"]
    out["speedup_vs_folds_stacked"] = out["folds_stacked"]["seconds"] / out["trials_stacked"]["seconds"]
    return out


def hardware(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"device": str(device), "cpu": cpu, "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def _typical_cell(row: dict[str, Any], t: float) -> str:
    key = f"typical_epochs_to_{t * 100:g}"
    if row.get(key) is None:
        return "-"
    std = row.get(key + "_std")
    return f"{row[key]:.2f}" + (f" ± {std:.2f}" if std is not None and row.get("runs", 1) > 1 else "")


def format_table(result: dict[str, Any]) -> str:
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
    reg = result.get("regression")
    if reg:
        lines.append(f"\nregression 5-fold x {reg['epochs']} epochs (seed preset): typical loop "
                     f"{reg['typical']['seconds']:.2f} s ({reg['typical']['threads']} threads), nndl one by one "
                     f"{reg['sequential']['seconds']:.2f} s, nndl batched {reg['batched']['seconds']:.2f} s "
                     f"-> {reg['speedup_vs_typical']:.1f}x vs typical, {reg['speedup']:.1f}x vs one by one "
                     f"(val MSE {reg['typical']['val_mse']:.4f} / {reg['sequential']['val_mse']:.4f} / "
                     f"{reg['batched']['val_mse']:.4f})")
        if reg.get("reference"):
            ref = reg["reference"]
            lines.append(f"regression reference GP (RBF + noise), same 5 folds: val MSE {ref['val_mse']:.4f}, test MSE "
                         f"{ref['test_mse']:.4f}, {ref['seconds']:.2f} s (fit + 5 fold refits)")
        if reg.get("auto"):
            auto = reg["auto"]
            lines.append(f"regression --preset auto: {auto['candidates']} candidates x 5 {auto['splitter']} folds + "
                         f"{auto['members']}-member ensemble in {auto['seconds']:.2f} s")
    loaded = result.get("regression_loaded")
    if loaded:
        lines.append(f"same CV x {loaded['epochs']} epochs with one other busy process: typical loop "
                     f"{loaded['typical']['seconds']:.2f} s ({loaded['typical']['threads']} threads), nndl batched "
                     f"{loaded['batched_policy']['seconds']:.2f} s (thread policy), "
                     f"{loaded['batched_2_threads']['seconds']:.2f} s (2 threads forced) -> "
                     f"{loaded['speedup_vs_typical']:.1f}x vs typical")
    search = result.get("regression_search")
    if search:
        lines.append(f"regression search, {search['trials']} trials x 5 folds x {search['epochs']} epochs: one model "
                     f"at a time {search['sequential']['seconds']:.2f} s, folds stacked per trial "
                     f"{search['folds_stacked']['seconds']:.2f} s, all trials stacked "
                     f"{search['trials_stacked']['seconds']:.2f} s -> {search['speedup_vs_sequential']:.1f}x vs one "
                     f"at a time, {search['speedup_vs_folds_stacked']:.1f}x vs folds stacked")
    hw = result["hardware"]
    lines.append(f"machine: {hw['gpu'] or hw['cpu']} ({hw['device']}, {hw['threads']} threads), torch "
                 f"{result['environment']['torch']}")
    return "\n".join(lines)


def run_bench(typical_epochs: int = 2, cnn_epochs: int = 0, fast_runs: int = 1, speed_runs: int = 1, subset: int = 0,
              test_subset: int = 0,
              regression_epochs: int = 600, search_trials: int = 8, loaded_epochs: int = 150,
              extra_presets: tuple[str, ...] = (), preset_runs: int = 1, data_dir: str | None = None, out: str | None = None,
              device: str = "auto", echo=print) -> dict[str, Any]:
    """Run the benchmark and write ``bench.json`` to a new run folder.

    Parameters
    ----------
    typical_epochs : int
        Epochs of the typical loop (its time to accuracy is only known up to these).
    cnn_epochs : int
        Epochs of the ``cnn`` preset (0 = the preset's own).
    fast_runs, speed_runs : int
        Seeds of the ``fast`` and ``speed`` presets (reported as mean ± std; 0 skips the row).
    subset, test_subset : int
        Use only that many training / test images (for quick checks; 0 = all).
    regression_epochs : int
        Epochs of the regression K-fold and search comparisons (0 skips them).
    search_trials : int
        Trials of the regression search comparison (0 skips it).
    loaded_epochs : int
        Epochs of the regression CV timed while another process keeps a core busy (0 skips it).
    extra_presets : tuple of str
        More classify presets to time after ``fast`` (e.g. ``accurate``, ``wide``, ``resnet``).
    preset_runs : int
        How many seeds (0, 1, ...) each of ``extra_presets`` trains with, at least one; more than one
        gives mean ± std rows.
    """
    dev = pick_device(device)
    data = load_fashion(data_dir)
    run_dir = new_run_dir(out, "bench", writes=("bench.json",))
    sizes = {"subset": subset, "test_subset": test_subset}
    result: dict[str, Any] = {"hardware": hardware(dev), "environment": environment(), "classification": [],
                              "settings": {"typical_epochs": typical_epochs, "cnn_epochs": cnn_epochs,
                                           "fast_runs": fast_runs, "speed_runs": speed_runs,
                                           "presets": list(extra_presets), "preset_runs": preset_runs, **sizes}}
    echo(f"bench: {result['hardware']} -> {run_dir}")
    if typical_epochs:
        rows = typical_loop(data, typical_epochs, dev, n_train=subset, n_test=test_subset)
        result["classification"].append(summarise("typical", rows))
        echo(f"  typical: {result['classification'][-1]['sec_per_epoch']:.2f} s/epoch")
    cnn = nndl_run(data, "cnn", dev, {**sizes, **({"epochs": cnn_epochs} if cnn_epochs else {})})
    result["classification"].append(summarise("cnn", cnn["rows"], {"compile_seconds": cnn["compile_seconds"]}))
    echo(f"  cnn:     {result['classification'][-1]['sec_per_epoch']:.2f} s/epoch")
    # one epoch of the typical loop, this run: the unit of the typical_epochs_to_X columns
    typical_seconds = result["classification"][0]["sec_per_epoch"] if typical_epochs else None
    for row in result["classification"]:
        in_typical_epochs(row, typical_seconds)
    seeded = [("fast", fast_runs), ("speed", speed_runs)] + [(p, max(1, preset_runs)) for p in extra_presets]
    for preset, runs in seeded:
        if runs >= 1:
            result["classification"].append(preset_row(data, preset, dev, sizes, runs, typical_seconds, echo))
    if regression_epochs:
        result["regression"] = {"epochs": regression_epochs, **regression_kfold(dev, regression_epochs),
                                "reference": regression_reference(dev)}
        if regression_epochs >= 600:  # the auto preset's own budget; tiny smoke runs skip it
            result["regression"]["auto"] = regression_auto(dev)
        if search_trials:
            result["regression_search"] = regression_search(dev, search_trials, regression_epochs)
    if loaded_epochs:
        result["regression_loaded"] = regression_loaded(dev, loaded_epochs)
    table = format_table(result)
    result["table"] = table
    write_json(run_dir / "bench.json", result)
    place(run_dir)  # complete: the marker lists what was written
    echo("\n" + table + f"\n\nwrote {run_dir / 'bench.json'}")
    result["run_dir"] = str(run_dir)
    return result
