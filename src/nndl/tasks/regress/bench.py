"""The regression rows of ``nndl bench`` (:mod:`nndl.tools.bench`): the ``seed`` preset's 5-fold CV, folds one
by one vs stacked into one model, against a plain student loop; the same under load; a search's trials
stacked; the ``auto`` preset; and the reference GP of every 1-D run (:mod:`nndl.tasks.regress.reference`) on the
same folds.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from nndl.base import config as config_mod
from nndl.base.errors import NndlError
from nndl.tasks import get_task
from nndl.training.crossval import cross_validate, cross_validate_many


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


def table_lines(result: dict[str, Any]) -> list[str]:
    """The regression lines of the bench table (none for the rows not run)."""
    lines: list[str] = []
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
    return lines
