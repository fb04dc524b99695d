#!/bin/sh
# Start a private Orthanc on 127.0.0.1 (free ports, HTTP user, known AE titles, TCP_NODELAY=1).
# Usage: scripts/ci/orthanc-start.sh DIR [NAME=AET@HOST:PORT ...]; prints one JSON line.
set -eu
DIR="$1"; shift
ARGS=""
for peer in "$@"; do ARGS="$ARGS --modality $peer"; done
PY="${PYTHON:-$(dirname "$0")/../../.venv/bin/python}"
# shellcheck disable=SC2086
exec "$PY" "$(dirname "$0")/orthanc.py" start --dir "$DIR" $ARGS
