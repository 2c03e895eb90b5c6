"""CUDA-only checks of the fast path: bf16 autocast + channels_last, batched folds, torch.compile.

They skip cleanly without a GPU (CI has none); ``bench/gpu_check.sh`` runs them on one.
"""
import pytest
import torch

import nndl
from nndl.base import config
from nndl.tools.bench import nndl_run
from nndl.training.crossval import cross_validate
from nndl.data.fashion import load_fashion
from nndl.tasks.regress.task import load_data, make_model_factory

from conftest import needs_fashion

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device (run bench/gpu_check.sh on a GPU machine)")
QUIET = dict(progress=False, figures=False, echo=lambda s: None)


@needs_cuda
@needs_fashion
def test_cnn_preset_learns_on_cuda(tmp_path):
    m = nndl.classify("cnn", {"subset": 8000, "test_subset": 2000, "epochs": 3}, out=tmp_path / "r", **QUIET)
    assert m["test_accuracy"] > 0.8
    assert m["device"].startswith("cuda")


@needs_cuda
@needs_fashion
def test_cuda_bf16_fast_path_matches_cpu_fp32_accuracy():
    """bf16 autocast + channels_last must not change what is learned (same recipe, two seeds each)."""
    data = load_fashion()
    sizes = {"subset": 6000, "test_subset": 2000, "epochs": 2, "schedule": "constant", "flip": False}
    accs = {}
    for device in ("cpu", "cuda"):
        accs[device] = sum(nndl_run(data, "cnn", torch.device(device), sizes, seed=s)["rows"][-1]["test_acc"]
                           for s in (0, 1)) / 2
    assert accs["cuda"] > 0.75 and abs(accs["cuda"] - accs["cpu"]) < 0.03, accs


@needs_cuda
def test_batched_folds_equal_sequential_on_cuda():
    cfg = config.resolve("regress", "seed", {"epochs": 60, "device": "cuda"})
    d = load_data(cfg)[0]
    x, y = torch.as_tensor(d.x, device="cuda"), torch.as_tensor(d.y, device="cuda")
    factory = make_model_factory(cfg, x, y)
    seq = cross_validate(factory, x, y, cfg, batched=False, progress=False)
    bat = cross_validate(factory, x, y, cfg, batched=True, progress=False)
    for a, b in zip(seq, bat):
        assert b.val_mse == pytest.approx(a.val_mse, rel=1e-3)


@needs_cuda
@needs_fashion
def test_compile_time_is_reported_apart_from_training():
    run = nndl_run(load_fashion(), "cnn", torch.device("cuda"), {"subset": 4096, "test_subset": 1000, "epochs": 2,
                                                                  "compile": True})
    assert run["compile_seconds"] > 0 and run["rows"][-1]["test_acc"] > 0.5
