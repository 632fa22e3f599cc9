#!/usr/bin/env bash
# Set up the environment and train the quickstart classifier on the bundled digits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
lightning fit --config recipes/quickstart.yaml "$@"
