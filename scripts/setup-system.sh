#!/usr/bin/env bash
# Debian packages nndl uses, installed when this user can (root, or password-less sudo):
#   dataset-fashion-mnist  the four official Fashion-MNIST files in /usr/share/datasets/fashion-mnist
#   postgresql             the server the distributed-tuning tests start
#   chromium               headless browser for the report test
# Without apt or rights it only says what is missing; nndl still runs (see README for other data sources).
set -u
packages="dataset-fashion-mnist postgresql chromium"
missing=""
for p in $packages; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: no apt-get; install yourself if you want them:$missing" >&2; exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "setup: not root; to get them run: sudo apt-get install$missing" >&2; exit 0
fi
echo "setup: installing Debian packages:$missing"
$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null \
  || echo "setup: apt-get failed for:$missing (nndl still works; see README)" >&2
exit 0
