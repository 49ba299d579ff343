#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with fmnist and its dependencies, and the
# Fashion-MNIST files from the Debian/Ubuntu package when apt is available (otherwise train.py downloads them),
# and PostgreSQL + chromium for the shared-study tests.
# Idempotent: running it again only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
  $sudo apt-get install -y dataset-fashion-mnist >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y dataset-fashion-mnist >/dev/null; } \
    || echo "setup: could not install dataset-fashion-mnist; train.py will download the data instead"
fi
# PostgreSQL (a throwaway server for the shared-study tests) and chromium (screenshots of optuna-dashboard);
# without them tests/test_sweeper_postgres.py skips, nothing else needs them (FMNIST_SETUP_MINIMAL=1 leaves them out)
if [ -z "${FMNIST_SETUP_MINIMAL:-}" ] && { ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v chromium >/dev/null; } && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql chromium >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null 2>&1 \
         && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql chromium >/dev/null 2>&1; } \
    || echo "setup: could not install postgresql/chromium; the PostgreSQL and dashboard tests will skip"
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned to the release this project is tested with (pip takes it from local disk where it lies there)
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "setup: ready (.venv/bin/python)"
