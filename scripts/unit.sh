#!/usr/bin/env bash
# The unit tier alone, in seconds: no Redis server, no processes, no Docker, nothing installed (run
# ./scripts/test.sh once first for the test dependencies). ./scripts/unit.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest tests/unit -q "$@"
