#!/usr/bin/env bash
# Create .venv (if missing) and install classzoo with its test extras.
# torch/torchvision are pinned to releases this project supports (never newer than 2.14.1).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[dev,tensorboard]"
python -c "import framework, torch; print('classzoo ready: torch', torch.__version__)"
