#!/bin/sh
# Debian's Chromium for the web UI's browser tests (Playwright drives it through its
# executable path; `playwright install` is never used). Idempotent.
set -eu
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y --no-install-recommends chromium
