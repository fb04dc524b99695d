#!/bin/sh
# PostgreSQL 15 server binaries for the scale-out integration tests (Debian 12's postgresql-15).
# The tests run their own private cluster on 127.0.0.1 (scripts/ci/postgres.py); the system
# service that the package may start is not used by them.
set -eu
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if [ ! -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends postgresql-15
fi
/usr/lib/postgresql/15/bin/pg_ctl --version
