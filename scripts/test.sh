#!/usr/bin/env bash
# Install everything the tests need (Redis, the Docker engine, the local base and model images, the
# Python dependencies), check lint and types, and run every test. Reuses what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/serverless-model build
.venv/bin/python -m pytest "$@"
