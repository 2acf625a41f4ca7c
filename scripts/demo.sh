#!/usr/bin/env bash
# Fresh machine -> everything installed -> the demo: a generated PET/CT phantom translated
# by the bundled default model; outputs (PET, fused PNG, metrics, Slicer scene) in out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/regc2p demo --out out/demo "$@"
