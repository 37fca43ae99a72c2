#!/usr/bin/env bash
# Install what the benchmark needs and run it (it builds the model image itself): ./scripts/bench.sh [options of
# python -m bench]. It prints the table and writes results.md, results.json and the plots to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh bench
exec .venv/bin/python -m bench "$@"
