# syntax=docker/dockerfile:1
# An S3 API server for the `local` compose stack where MinIO's image cannot be pulled: moto's
# server (the S3 peer the integration tests already use), at the version in constraints.txt. State
# is in memory: a restart empties the buckets (a test peer, not storage). Also carries boto3 for
# the one-shot that creates the buckets.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PIP_CONFIG_FILE
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

COPY constraints.txt docker/peers/s3.requirements.txt /tmp/radgate-pip/
RUN pip install -c /tmp/radgate-pip/constraints.txt -r /tmp/radgate-pip/s3.requirements.txt \
    && rm -rf /tmp/radgate-pip \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/s3 s3
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/radgate-healthcheck
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/radgate-entrypoint

USER 10001:10001
WORKDIR /home/s3
EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=10 \
    CMD ["python", "/usr/local/bin/radgate-healthcheck", "tcp", "127.0.0.1", "9000"]
# The server takes no secrets (moto accepts any credentials); the buckets one-shot runs its Python
# through /usr/local/bin/radgate-entrypoint for the AWS_*_FILE secrets.
CMD ["moto_server", "-H", "0.0.0.0", "-p", "9000"]
