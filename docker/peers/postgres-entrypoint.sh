#!/bin/sh
# First start on an empty $PGDATA: initdb with the superuser POSTGRES_USER whose password is read
# from POSTGRES_PASSWORD_FILE (never from the environment or a layer), create POSTGRES_DB, run
# /docker-entrypoint-initdb.d/*.sql once; then PostgreSQL in the foreground, password auth
# (scram-sha-256) for every network peer. TLS: PostgreSQL refuses a key file that others can read,
# and compose mounts secrets with the host file's mode, so POSTGRES_SSL_KEY_SOURCE (the mounted
# key) is copied to POSTGRES_SSL_KEY_COPY (this user's, mode 0600), which the command's
# `-c ssl_key_file=` names (docker/compose.yaml).
set -eu
if [ -n "${POSTGRES_SSL_KEY_SOURCE:-}" ]; then
  : "${POSTGRES_SSL_KEY_COPY:=/tmp/postgres-tls/server-key.pem}"
  (
    umask 077
    mkdir -p "$(dirname "$POSTGRES_SSL_KEY_COPY")"
    cp "$POSTGRES_SSL_KEY_SOURCE" "$POSTGRES_SSL_KEY_COPY"
  )
  chmod 0600 "$POSTGRES_SSL_KEY_COPY"
fi
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
# Unix sockets in /tmp: writable with a read-only root filesystem (a tmpfs there).
SOCKETS=/tmp
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD_FILE:-}" ] || [ ! -r "$POSTGRES_PASSWORD_FILE" ]; then
    echo "postgres-entrypoint: POSTGRES_PASSWORD_FILE must name a readable secret" >&2
    exit 64
  fi
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
    --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if ! pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k $SOCKETS" -l /tmp/postgres-init.log -w start >/dev/null; then
    cat /tmp/postgres-init.log >&2
    exit 70
  fi
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -h "$SOCKETS" -U "$POSTGRES_USER" -d postgres \
      -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
  fi
  for script in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$script" ] || continue
    echo "postgres-entrypoint: running $script"
    psql -v ON_ERROR_STOP=1 -h "$SOCKETS" -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$script" >/dev/null
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
if [ "$1" = postgres ]; then
  shift
  exec postgres -D "$PGDATA" -c listen_addresses='*' -k "$SOCKETS" "$@"
fi
exec "$@"
