#!/usr/bin/env bash
# Fresh machine -> everything installed -> lint + the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check RegC2P RegC2PTraining Testing benchmarks scripts
.venv/bin/ruff format --check RegC2P RegC2PTraining Testing benchmarks scripts
.venv/bin/python -m pytest -q "$@"
