#!/usr/bin/env bash
# Full-data Fashion-MNIST runs behind the README's accuracy table (one run per preset, seed 0).
#   bash bench/full_fashion.sh [preset ...]     (default: mlp cnn wide)
set -euo pipefail
cd "$(dirname "$0")/.."
presets=${*:-mlp cnn wide}
for p in $presets; do
  out=runs/full-$p-$(date +%Y%m%d-%H%M%S)
  .venv/bin/nndl classify --preset "$p" --out "$out" --no-progress --seed 0
  .venv/bin/python -c "import json,sys; m=json.load(open('$out/metrics.json')); print('RESULT $p', m['test_accuracy'], m['train_seconds'], m['epochs'])"
done
