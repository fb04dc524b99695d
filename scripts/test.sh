#!/usr/bin/env bash
# Quick start, command 2: set everything up, then run the test suite (unit + integration with
# real Ray, MLflow, Orthanc, dcmtk, Chromium on 127.0.0.1). Long runs: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_AUTH_MODE=disabled TCP_NODELAY=1
exec .venv/bin/python -m pytest -q "$@"
