#!/usr/bin/env bash
# One-time setup on a fresh Debian 12 machine (idempotent): system tools, then the Python env.
#   scripts/setup.sh            # everything
#   RADGATE_SKIP_APT=1 ...      # skip apt-get (tools already installed, or no root)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${RADGATE_SKIP_APT:-0}" != "1" ]; then
  # Orthanc (a real PACS peer), dcmtk, dicom3tools (dciodvfy), GDCM; Chromium for the web UI tests.
  sh scripts/ci/install-apt.sh
  if [ -x scripts/ci/install-browser.sh ]; then sh scripts/ci/install-browser.sh; fi
  # PostgreSQL 15 for the scale-out integration tests (a private cluster per test session).
  if [ -f scripts/ci/install-postgres.sh ]; then sh scripts/ci/install-postgres.sh; fi
fi

PYTHON="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned (2.13.0, CPU build) in pyproject.toml: no multi-GB CUDA download.
# constraints.txt: the versions the images install too (one lock for venv and containers).
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test,postgres]'
# Triton: the client without its protobuf<7 pin (its gRPC stubs work with the protobuf Ray and
# MLflow need), and the real tritonserver binary from nvidia-pytriton, installed apart.
.venv/bin/python -m pip install -q -c constraints.txt grpcio python-rapidjson "ml-dtypes<=0.5.4" urllib3
.venv/bin/python -m pip install -q --no-deps "tritonclient==2.73.0"
PYTHON="$PWD/.venv/bin/python" bash scripts/ci/install-triton.sh
# OHIF Viewer for Orthanc (npm pack, SHA-256 checked; ~/.cache/radgate/ohif): SEG over the series.
PYTHON="$PWD/.venv/bin/python" sh scripts/ci/install-viewer.sh
# FHIR R4 test server (Medplum's router + validator) and the R4 JSON schema (npm; ~/.cache/radgate).
sh scripts/ci/install-fhir-server.sh
echo "setup done: $(.venv/bin/radgate --version)"
