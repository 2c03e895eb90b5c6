import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# $NNDL_DATA first, as nndl itself searches (the GPU check carries the files in .gpu-data/).
FASHION_DIR = Path(os.environ.get("NNDL_DATA") or "/usr/share/datasets/fashion-mnist")

# Tests share 2 cores with each other's data loading; more threads than cores only thrash.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _repo_root_cwd(monkeypatch):
    """Run every test from the repo root so the bundled data paths resolve."""
    monkeypatch.chdir(ROOT)


def run_cli(*args, check=None):
    """Run `python -m nndl.cli ...` in a subprocess; return CompletedProcess."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "nndl.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=600)
    if check is not None:
        assert proc.returncode == check, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# How a Ctrl-C'd nndl may end: exit code 130 -- or death by SIGINT, which a shell also reports as 130.
# CPython 3.11 marks a KeyboardInterrupt as unhandled when it passed through exec() of generated code
# (a dataclass being defined, e.g. while torch imports a module on the first optimiser step), even
# though nndl caught it, cleaned up and returned 130; the interpreter then ends itself by SIGINT.
INTERRUPTED_CODES = (130, -2)


needs_fashion = pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                                   reason="Fashion-MNIST Debian package (dataset-fashion-mnist) not installed")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on 2 shared cores, two spinning OpenMP threads are several times slower."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
