#!/usr/bin/env bash
# A plain install, as a user would do it: build the wheel, install it into a fresh venv outside the
# checkout, and from another folder run the README's first commands. Fails on any error.
#   bash scripts/check-wheel.sh            (CI runs it; takes a few minutes, most of it installing torch)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/nndl-wheel-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
PYTHON=${PYTHON:-python3}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}

quiet_pip() {  # pip's warnings about this machine's unused extra index paths are noise here
  "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

echo "wheel check: building the wheel"
quiet_pip "$PYTHON" -m pip wheel -q --no-deps -w "$work/dist" "$repo"
wheel=$(ls "$work"/dist/nndl-*.whl)
"$PYTHON" -m venv "$work/venv"
bin="$work/venv/bin"
echo "wheel check: installing $TORCH_PIN and $(basename "$wheel") into a fresh venv"
quiet_pip "$bin/pip" install -q "$TORCH_PIN"
quiet_pip "$bin/pip" install -q "$wheel"

mkdir "$work/elsewhere" && cd "$work/elsewhere"   # nothing of the checkout is reachable from here
export OMP_NUM_THREADS=1
"$bin/python" -m nndl --version
"$bin/nndl" regress --set epochs=30 --out reg --no-progress --no-figures > reg.log
grep -q '"test_mse"' reg/metrics.json
"$bin/nndl" tune regress --trials 2 --folds 2 --out tune > tune.log  # the shipped default space (it searches epochs)
test -s tune/best_preset.toml
# the pages are Jinja2 templates shipped as package data: a run's report, a study's and a comparison use all of them
grep -q '<section id="environment">' reg/report.html && grep -q '<section id="trials">' tune/report.html
"$bin/nndl" compare reg tune --out compare.html > compare.log
grep -q '<section id="curves">' compare.html
"$bin/nndl" export reg --format torchscript
# ONNX is an extra: without it, one line that names it and exit 2
set +e; "$bin/nndl" export reg 2> onnx.err; code=$?; set -e
[ "$code" = 2 ] && grep -q "nndl\[export\]" onnx.err && [ "$(wc -l < onnx.err)" = 1 ] || { cat onnx.err; exit 1; }
quiet_pip "$bin/pip" install -q "$wheel[export]"
"$bin/nndl" export reg
test -s reg/model.onnx
if [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -n "${NNDL_DATA:-}" ]; then
  "$bin/nndl" classify --set subset=600 --set test_subset=200 --set epochs=1 --out cls --no-progress \
    --no-figures > cls.log
  grep -q '"test_accuracy"' cls/metrics.json
  "$bin/nndl" export cls
else
  echo "wheel check: no Fashion-MNIST files here; skipped the classify step"
fi
echo "wheel check: OK (plain install: regress, tune, classify, export, python -m nndl)"
