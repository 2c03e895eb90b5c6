"""`nndl --version` and every `--help` answer without importing torch, matplotlib or Optuna.

The start-up time itself lives in no test (no timed assertions): what keeps it well under half a
second is that these commands import none of the heavy packages, which is what this checks.
"""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

HEAVY = ("torch", "matplotlib", "optuna", "numpy", "sklearn")
COMMANDS = ["regress", "classify", "tune", "bench", "presets", "config", "data", "report", "compare", "predict",
            "export", "lr-find"]
PROBE = """
import sys
from nndl.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("argv", [["--version"], ["--help"]] + [[c, "--help"] for c in COMMANDS],
                         ids=lambda a: " ".join(a))
def test_version_and_help_import_no_heavy_package(argv):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=120)
    assert "HEAVY:" in proc.stdout, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY:", proc.stdout[-500:]


def test_presets_and_config_list_everything_without_torch():
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=("torch",)), "config", "classify", "--preset",
                           "wide"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=120)
    assert "channels" in proc.stdout and "32,64,128" in proc.stdout and "adamw" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY:"
