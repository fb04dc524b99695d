#!/bin/sh
# Stop the Orthanc started by orthanc-start.sh DIR and wait for its PID to exit.
set -eu
PY="${PYTHON:-$(dirname "$0")/../../.venv/bin/python}"
exec "$PY" "$(dirname "$0")/orthanc.py" stop --dir "$1"
