#!/usr/bin/env bash
# Install everything the tests need (Redis, the Docker engine, the local base and model images, the
# Python dependencies), check lint and types, and run every test. Reuses what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q "${missing[@]}"
fi
$SUDO bash scripts/setup-docker.sh

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e ".[test]"
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/serverless-model build
.venv/bin/python -m pytest "$@"
