"""The `speed` preset's time to 91% in typical-loop epochs, each seed timed right after one epoch of the
typical loop in the same process, so that a machine whose speed drifts (shared hosts) moves both.

    .venv/bin/python bench/speed_interleaved.py              # bf16 where the CPU has it (the preset)
    .venv/bin/python bench/speed_interleaved.py --fp32       # amp_cpu=false, as on a CPU without bf16

Writes bench/results/speed_interleaved[-fp32].json.
"""
import json
import sys
from pathlib import Path

import torch

from nndl.tools.bench import hardware, load_fashion, nndl_run, summarise, typical_loop


def main(seeds: int = 3) -> None:
    fp32 = "--fp32" in sys.argv[1:]
    device = torch.device("cpu")
    data = load_fashion(None)
    rows = []
    for seed in range(seeds):
        typical = typical_loop(data, 1, device)[0]["train_seconds"]
        run = summarise("speed", nndl_run(data, "speed", device, {"amp_cpu": False} if fp32 else {}, seed=seed)["rows"])
        reached = run["time_to_91"]
        rows.append({"seed": seed, "typical_epoch_seconds": typical, "final_test_acc": run["final_test_acc"],
                     "seconds_to_91": reached, "typical_epochs_to_91": reached / typical if reached else None})
        print(f"seed {seed}: typical epoch {typical:.2f} s | speed {run['final_test_acc']:.4f}, 91% after "
              + (f"{reached:.2f} s = {reached / typical:.2f} typical epochs" if reached else "never"), flush=True)
    out = Path(__file__).parent / "results" / f"speed_interleaved{'-fp32' if fp32 else ''}.json"
    out.write_text(json.dumps({"hardware": hardware(device), "torch": torch.__version__, "amp_cpu": not fp32,
                               "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
