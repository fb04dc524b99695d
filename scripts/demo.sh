#!/usr/bin/env bash
# Quick start, command 1: set everything up, then run the end-to-end demo on embedded defaults
# (SQLite catalog, local MLflow store, local Ray) under ./.radgate.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
exec .venv/bin/radgate demo "$@"
