#!/usr/bin/env bash
# Set up the environment and run the whole test suite: exactly what CI runs (.ci/run).
set -euo pipefail
exec bash "$(dirname "$0")/../.ci/run" "$@"
