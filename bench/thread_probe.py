"""The thread policy's choice, measured: the seed preset's batched 5-fold CV with the probe
(threads=0), forced to 1 thread and forced to 2, alternating, on a quiet machine and beside one
busy process (a numpy matrix product in a loop).

    .venv/bin/python bench/thread_probe.py          # -> bench/results/thread_probe.json
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from nndl.tools.bench import BUSY_PROCESS, time_seed_cv


def measure(busy: bool, repeats: int = 3) -> dict[str, list[float]]:
    """Seconds of the CV per thread setting (0 = the probe), ``repeats`` rounds of all three."""
    proc = (subprocess.Popen([sys.executable, "-c", BUSY_PROCESS], env={**os.environ, "OMP_NUM_THREADS": "1"})
            if busy else None)
    times: dict[str, list[float]] = {"probe": [], "1 thread": [], "2 threads": []}
    try:
        time.sleep(1.0 if busy else 0.0)
        for _ in range(repeats):
            for threads, name in ((0, "probe"), (1, "1 thread"), (2, "2 threads")):
                times[name].append(round(time_seed_cv(torch.device("cpu"), threads=threads)["seconds"], 3))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
    return times


def main() -> None:
    result = {"quiet": measure(False), "one busy process": measure(True), "torch": torch.__version__}
    for load in ("quiet", "one busy process"):
        print(f"{load:<17} " + " | ".join(f"{k} {v}" for k, v in result[load].items()))
    out = Path(__file__).parent / "results" / "thread_probe.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
