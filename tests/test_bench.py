import json

import pytest

from conftest import needs_fashion, run_cli


@needs_fashion
def test_bench_runs_end_to_end_on_a_tiny_budget(tmp_path):
    out = tmp_path / "bench"
    proc = run_cli("bench", "--typical-epochs", "1", "--cnn-epochs", "1", "--fast-runs", "2", "--speed-runs", "2", "--subset", "1024",
                   "--test-subset", "500", "--regression-epochs", "20", "--loaded-epochs", "5", "--presets", "accurate",
                   "--preset-runs", "2", "--out", out, check=0)
    assert "s/epoch" in proc.stdout and "regression 5-fold" in proc.stdout and "all trials stacked" in proc.stdout
    result = json.loads((out / "bench.json").read_text())
    names = [r["name"] for r in result["classification"]]
    assert names == ["typical", "cnn", "fast", "speed", "accurate"]
    for row in result["classification"]:
        assert row["sec_per_epoch"] > 0 and 0 <= row["final_test_acc"] <= 1
        assert {"time_to_91", "time_to_93", "time_to_93.5", "time_to_94", "time_to_94.5", "typical_epochs_to_91"} <= set(row)
    for row in result["classification"][2:]:  # fast, speed and the --presets row: two seeds each
        assert row["runs"] == 2 and len(row["per_seed"]) == 2 and "time_to_93.5_std" in row
        assert all(len(seed["test_acc_by_epoch"]) == row["epochs"] for seed in row["per_seed"])
    assert result["classification"][4]["epochs"] == 26 and result["settings"]["preset_runs"] == 2
    speed = result["classification"][3]
    assert speed["final_test_acc"] > 0.4 and speed["epochs"] == 3  # chance 0.1; the speed preset's own schedule
    assert "accurate seed 1:" in proc.stdout  # each seed's result as it finishes (long presets)
    assert "to 93.5%" in proc.stdout and "epochs of this run's typical loop" in proc.stdout
    reg = result["regression"]
    assert reg["speedup"] > 0 and reg["sequential"]["val_mse"] == pytest.approx(reg["batched"]["val_mse"], rel=1e-3)
    assert reg["reference"]["model"] == "gp" and "regression reference GP" in proc.stdout
    search = result["regression_search"]
    assert search["trials"] == 8 and search["speedup_vs_sequential"] > 0
    for way in ("folds_stacked", "trials_stacked"):  # same seeds: every way scores every trial alike
        assert search[way]["val_mse"] == pytest.approx(search["sequential"]["val_mse"], rel=1e-3)
    loaded = result["regression_loaded"]  # the same CV beside one busy process: the thread policy's row
    assert loaded["epochs"] == 5 and "one other busy process" in proc.stdout
    assert loaded["batched_policy"]["val_mse"] == pytest.approx(loaded["batched_2_threads"]["val_mse"], rel=1e-3)
    assert loaded["typical"]["seconds"] > 0 and loaded["speedup_vs_typical"] > 0
    assert result["hardware"]["device"] == "cpu" and result["environment"]["torch"]


@needs_fashion
def test_fast_path_and_typical_loop_agree_on_accuracy():
    """Same network, same data and optimiser: the fast path must not change what is learned."""
    import torch

    from nndl.tools.bench import nndl_run, typical_loop
    from nndl.data.fashion import load_fashion

    data = load_fashion()
    typical, fast = [], []
    for seed in (0, 1):
        typical.append(typical_loop(data, 2, torch.device("cpu"), seed=seed, n_train=4000, n_test=2000)[-1]["test_acc"])
        # the cnn preset with the typical loop's recipe (constant lr, no flips): only the data path differs
        fast.append(nndl_run(data, "cnn", torch.device("cpu"), {"subset": 4000, "test_subset": 2000, "epochs": 2,
                                                                "schedule": "constant", "flip": False},
                             seed=seed)["rows"][-1]["test_acc"])
    a, b = sum(typical) / 2, sum(fast) / 2
    assert a > 0.7 and b > 0.7
    assert abs(a - b) < 0.04  # seed-to-seed spread at this size is about +-0.01


def test_the_typical_regression_loop_is_timed_warm():
    """The first torch.optim optimiser of a process imports torch._dynamo (~1 s): a one-off that used
    to land inside the typical row's time and flatter nndl. It must be paid before the clock starts."""
    import subprocess
    import sys

    # A fresh interpreter: this test process may have imported torch._dynamo already.
    code = ("import sys, time, torch\n"
            "import nndl.tasks.regress.bench as b\n"
            "seen = []\n"
            "real = time.perf_counter\n"
            "def clock():\n"
            "    seen.append('torch._dynamo' in sys.modules)\n"
            "    return real()\n"
            "b.time.perf_counter = clock\n"
            "x = torch.linspace(-1, 1, 20)[:, None]\n"
            "out = b.regression_typical(x, x[:, 0] ** 2, epochs=2, folds=2)\n"
            "assert out['seconds'] >= 0 and out['val_mse'] >= 0, out\n"
            "print(seen[0])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True", result.stdout + result.stderr
