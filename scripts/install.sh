#!/usr/bin/env bash
# Install what the tests and the benchmark need: Redis (and Sentinel), the Docker engine with the local base image,
# and the Python dependencies (with the extra named by $1) in .venv. Reuses what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ "$1" = test ]; then  # the dashboard's browser test and the compose test
    command -v chromium >/dev/null || missing+=(chromium)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
fi
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q "${missing[@]}"
fi
$SUDO bash scripts/setup-docker.sh

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e ".[$1]"
