#!/usr/bin/env bash
# The GPU check: the CUDA tests and the benchmark in one go, results under $OUT. Installs nothing.
#
# For a session lent a device machine (../.library/device); the data travel in .gpu-data/:
#   make gpu-data                                   # here: copies the four .gz files (gitignored)
#   device run: command="bash bench/gpu_check.sh", carry=[".gpu-data"], timeout_s=540
# It uses the machine's own python3 (its CUDA build of torch) with nndl from src/; nndl's
# training path needs torch, numpy, matplotlib and tqdm only (Optuna is loaded by `tune` alone).
# Budget: tests ~1 min, bench ~5 min on an H100; each step has its own timeout so a slow
# step cannot eat the next one's output.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 NNDL_DATA="${NNDL_DATA:-$PWD/.gpu-data}"
PY=${PYTHON:-python3}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

timeout "${TEST_SECONDS:-150}" $PY -m pytest -q -ra -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/tests.log"

# typical loop (3 epochs), cnn preset, fast preset over 5 seeds, wide and resnet for the 93%/94% rows,
# regression K-fold and search batching.
timeout "${BENCH_SECONDS:-330}" $PY -m nndl.cli bench --typical-epochs 3 --fast-runs 5 --presets wide resnet \
  --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
ls -la "$OUT" "$OUT/bench" 2>/dev/null
