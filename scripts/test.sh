#!/usr/bin/env bash
# Fresh machine -> everything installed -> lint + the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check RegC2P RegC2PTraining Testing benchmarks scripts
.venv/bin/ruff format --check RegC2P RegC2PTraining Testing benchmarks scripts
# Everything that runs inside Slicer must run on its oldest supported Python (Slicer 5.8: 3.9).
.venv/bin/vermin --quiet --target=3.9- --violations --no-tips RegC2P RegC2PTraining
.venv/bin/python -m pytest -q "$@"
