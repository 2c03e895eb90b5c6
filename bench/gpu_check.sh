#!/usr/bin/env bash
# The GPU check: the CUDA tests and the benchmark in one go, results under $OUT. Installs nothing.
#
# For a session lent a device machine (../.library/device); the data travel in .gpu-data/:
#   make gpu-data                                   # here: copies the four .gz files (gitignored)
#   device run: command="bash bench/gpu_check.sh", carry=[".gpu-data"], timeout_s=540
# It uses the machine's own python3 (its CUDA build of torch) with nndl from src/; nndl's
# training path needs torch, numpy, matplotlib and tqdm only (Optuna is loaded by `tune` alone).
# Budget: tests ~1 min, each bench at most ~3.3 min on an H100; each step has its own timeout so a slow
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

# typical loop (3 epochs), cnn preset, fast and speed presets over 3 seeds, regression K-fold and search
# batching; then, in a second run with its own timeout, the accurate and record presets (issue 14's
# 93.5% / 94.5% rows; record is the GPU record recipe), so a slow record run cannot lose the first table.
timeout "${BENCH_SECONDS:-190}" $PY -m nndl.cli bench --typical-epochs 3 --fast-runs 3 --speed-runs 3 \
  --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
timeout "${PRESET_SECONDS:-190}" $PY -m nndl.cli bench --typical-epochs 1 --cnn-epochs 1 --fast-runs 0 --speed-runs 0 \
  --presets accurate record --regression-epochs 0 --loaded-epochs 0 --search-trials 0 \
  --out "$OUT/bench-presets" 2>&1 | tee "$OUT/bench-presets.log"
ls -la "$OUT" "$OUT/bench" "$OUT/bench-presets" 2>/dev/null
