#!/bin/sh
# Create the files docker/compose.yaml mounts as secrets (random values; existing files kept).
# They live in docker/secrets/, which git ignores; nothing secret is in an image or in compose.
set -eu
cd "$(dirname "$0")/secrets"
umask 077
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
[ -s postgres_password ] || random > postgres_password
[ -s minio_root_user ] || echo radgate-admin > minio_root_user
[ -s minio_root_password ] || random > minio_root_password
[ -s ray_auth_token ] || python3 -c 'import secrets; print(secrets.token_hex(32))' > ray_auth_token
# The 256-bit project key (UID pseudonyms, date shifts, sealing): back it up, never rotate casually.
[ -s radgate_project_key ] || python3 -c 'import secrets; print(secrets.token_hex(32))' > radgate_project_key
# Orthanc's HTTP user: the plain password for RadGate, the same in Orthanc's RegisteredUsers JSON.
[ -s orthanc_password ] || random > orthanc_password
python3 -c 'import json, sys; print(json.dumps({"radgate": open(sys.argv[1]).read().strip()}))' \
  orthanc_password > orthanc_users
# The services' RadGate tokens are issued by an admin once the catalog runs
# (scripts/containers.sh bootstrap): empty until then.
for service in gateway serving ui; do [ -e "radgate_${service}_token" ] || : > "radgate_${service}_token"; done
# Compose bind-mounts secret files with their host mode: containers run as other users.
chmod 0644 ./*
chmod 0700 .
ls -l
