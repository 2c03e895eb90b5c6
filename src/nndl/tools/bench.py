"""``nndl bench``: time-to-accuracy and seconds per epoch, nndl against a typical notebook loop.

All rows are measured in one process on one machine, so the ratios compare like with like. Each
task's rows are its own (:mod:`nndl.tasks.classify.bench`: the typical notebook loop against nndl's
``cnn``, ``fast`` and ``speed`` presets on Fashion-MNIST; :mod:`nndl.tasks.regress.bench`: the
``seed`` preset's K-fold CV one by one and stacked, a search's trials, the reference GP); this module
runs them in order, names the machine and writes ``bench.json`` with the table.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from nndl.data.fashion import load_fashion
from nndl.runfolder.files import environment, new_run_dir, place, write_json
from nndl.tasks.classify import bench as classify_bench
from nndl.tasks.classify.bench import in_typical_epochs, nndl_run, preset_row, summarise, typical_loop  # noqa: F401
from nndl.tasks.regress import bench as regress_bench
from nndl.tasks.regress.bench import (regression_auto, regression_kfold, regression_loaded,  # noqa: F401
                                      regression_reference, regression_search)
from nndl.training.trainer import pick_device


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


def format_table(result: dict[str, Any]) -> str:
    """The bench table: each task's lines, then the machine."""
    lines = classify_bench.table_lines(result) + regress_bench.table_lines(result)
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
