#!/bin/sh
# Secrets as files (Docker/Compose secrets, Kubernetes secret volumes), never in the image or the
# compose file: for every NAME_FILE=/path in the environment, export NAME=<contents of /path>,
# then run the command. E.g. PGPASSWORD_FILE=/run/secrets/postgres_password gives libpq (and so
# RADGATE_CATALOG_URL / MLflow's backend URL, written without a password) its password.
set -eu
for assignment in $(env | grep -E '^[A-Z][A-Z0-9_]*_FILE=' | cut -d= -f1); do
  name="${assignment%_FILE}"
  file="$(printenv "$assignment")"
  case "$name" in RADGATE_KEY) continue ;; esac  # RADGATE_KEY_FILE is a path RadGate reads itself
  if [ -r "$file" ]; then
    value="$(cat "$file")"
    export "$name=$value"
  else
    echo "entrypoint: $assignment names an unreadable file" >&2
    exit 64
  fi
done
exec "$@"
