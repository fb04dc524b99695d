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
# Separated keys (governance.keyring), one file per purpose, each mounted only where it is needed
# (docker/compose.yaml): X25519 broker pair (broker.key stays here: the honest broker's), Ed25519
# audit-signing pair, AES keys of serving's sealed store and of UI sessions. Hex of the raw bytes.
mkdir -p keys
python3 - <<'PY'
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

keys = Path("keys")
for name, kind in (("broker", X25519PrivateKey), ("audit-signing", Ed25519PrivateKey)):
    private, public = keys / f"{name}.key", keys / f"{name}.pub"
    if not private.exists():
        seed = secrets.token_bytes(32)
        raw = kind.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        private.write_text(seed.hex() + "\n")
        public.write_text(raw.hex() + "\n")
for name in ("serving-store", "ui-session", "artifact-digest", "gateway-spool"):
    if not (keys / f"{name}.key").exists():
        (keys / f"{name}.key").write_text(secrets.token_bytes(32).hex() + "\n")
PY
radgate="${RADGATE:-$(command -v radgate || echo ../../.venv/bin/radgate)}"
# The services that write no governance entry sign their audit entries with a writer key of
# their own, valid only for their actions (governance.keyring.SERVICE_WRITERS: gateway, serving,
# training; `radgate keys init` registers the same): audit-writer-NAME.key, mounted as that
# service's audit-writer.key, and the public keys with their scopes in audit-writers.json, which
# every verifier reads. Registered writers are kept (their entries must stay verifiable).
"$(dirname "$radgate")/python" -c 'from pathlib import Path; from governance.keyring import ensure_service_writers; from governance.settings import Settings; ensure_service_writers(Settings(key_file=Path("keys/project.key").resolve(), project_key=None))'
# The project key's public id, for the services that check which key pseudonymised the data
# (training's evidence) and hold no key.
"$(dirname "$radgate")/python" -c 'import sys; from pathlib import Path; from governance.keys import key_id_of_file; print(key_id_of_file(Path(sys.argv[1])))' \
  radgate_project_key > radgate_project_key_id
# TLS for every RadGate listener and for Orthanc's DICOM TLS: a development CA and a certificate of
# its own per service (`radgate certs dev`: scripts/setup.sh's venv, or RADGATE=/path/to/radgate);
# a site puts its PKI's files here instead. Existing certificates are kept; only the missing ones
# are issued. tls/ca-key.pem is mounted nowhere.
# PostgreSQL's and MinIO's certificates (DNS names `postgres`, `minio`): every client verifies them
# (sslmode=verify-full; AWS_CA_BUNDLE).
"$radgate" certs dev --dir tls --service gateway --service serving --service ui --service orthanc \
  --service mlflow --service postgres --service minio --service triton >/dev/null
# Ray's ports speak mutual TLS (RAY_USE_TLS): Ray's nodes dial each other at their IP addresses,
# which gRPC checks against the certificate, so the training cluster's certificate (ray.pem) and
# serving's own Ray's (serving-ray.pem) name every address of the compose network (compose.yaml's
# subnet; RAY_NODE_NETWORK) besides their service names.
RAY_NODE_NETWORK="${RAY_NODE_NETWORK:-172.28.0.0/24}" "$(dirname "$radgate")/python" -c 'import ipaddress, os; from pathlib import Path; from governance.tls import issue_service_certificates as issue; nodes = tuple(str(h) for h in ipaddress.ip_network(os.environ["RAY_NODE_NETWORK"], strict=False).hosts()); issue(Path("tls"), ("ray",), extra_names=("ray-head", *nodes)); issue(Path("tls"), ("serving-ray",), extra_names=("serving", *nodes))'
# Orthanc's HTTPS (REST, DICOMweb) takes its certificate and key from one PEM file.
[ -e tls/orthanc-https-key.pem ] || (umask 077; cat tls/orthanc.pem tls/orthanc-key.pem > tls/orthanc-https-key.pem)
# The services' RadGate tokens are issued by an admin once the catalog runs
# (scripts/containers.sh bootstrap): empty until then.
for service in gateway serving ui; do [ -e "radgate_${service}_token" ] || : > "radgate_${service}_token"; done
# Compose bind-mounts secret files with their host mode: containers run as other users.
chmod 0644 ./* 2>/dev/null || true
chmod 0644 keys/* tls/*
chmod 0600 keys/broker.key tls/ca-key.pem tls/server-key.pem tls/client-key.pem   # mounted nowhere
chmod 0700 . keys tls
ls -l
