#!/bin/sh
# The OHIF Viewer (v3, the prebuilt dist that npm's @ohif/app publishes) that Orthanc serves under
# /ohif/ so a PACS user sees RadGate's DICOM SEG over the series (imaging.gateway.viewer). `npm
# pack` fetches the pinned version, its SHA-256 is checked, and dist/ is unpacked into
# $RADGATE_OHIF_DIST (default ~/.cache/radgate/ohif/VERSION/dist); never committed. Idempotent.
# Needs npm (Debian `npm`, installed here if missing) and the project's venv.
set -eu
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
if ! command -v npm >/dev/null 2>&1 && [ "${RADGATE_SKIP_APT:-0}" != "1" ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq --no-install-recommends npm
fi
"$PY" -m imaging.gateway.viewer install
