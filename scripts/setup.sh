#!/usr/bin/env bash
# Create .venv with the CPU build of torch and RegC2P (editable) with its test tools.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: a bare "torch" requirement would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test]"
# dciodvfy (Debian/Ubuntu package dicom3tools) validates the DICOM series the tests write.
# Installed when missing and this runs as root with apt-get (as in CI); elsewhere the test says it is skipped.
if ! command -v dciodvfy >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dicom3tools >/dev/null
  else
    echo "note: dciodvfy is not installed (apt-get install dicom3tools); the DICOM validation test will be skipped" >&2
  fi
fi
