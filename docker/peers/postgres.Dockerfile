# syntax=docker/dockerfile:1
# PostgreSQL 15 from Debian for the `local` compose stack (docker/compose.local.yaml), where the
# official postgres:15-bookworm image cannot be pulled. It keeps that image's interface:
# POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE, /docker-entrypoint-initdb.d/*.sql run once on
# an empty data directory, data in /var/lib/postgresql/data; runs as `postgres`, never root.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}

# Debian stable: the suite pins the versions (security updates only).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d \
    && chown -R postgres:postgres /var/lib/postgresql \
    && chmod 0700 /var/lib/postgresql/data
COPY --chmod=0755 docker/peers/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint

# PGHOST: the tools in this image (pg_isready, psql) find the server where it listens.
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGHOST=/tmp \
    PGDATA=/var/lib/postgresql/data
# The package creates the user (its uid is not fixed): local-stack peer only.
# hadolint ignore=DL3066
USER postgres
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=10 \
    CMD ["pg_isready", "-h", "127.0.0.1"]
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
CMD ["postgres"]
