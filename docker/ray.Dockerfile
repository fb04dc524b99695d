# syntax=docker/dockerfile:1
# Ray on CPU for RadGate's trainer and serving images where Ray's own images cannot be pulled:
# the same Python base as gateway/UI/MLflow, Ray at the project's pin (constraints.txt), and the
# layout of rayproject/ray that KubeRay and the Dockerfiles expect (user `ray`, uid 1000, gid 100,
# home /home/ray). The GPU variant stays Ray's CUDA image (rayproject/ray:VERSION-py311-gpu).
#   scripts/containers.sh build ray      -> localhost/radgate/ray:2.60.0-cpu
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PIP_CONFIG_FILE
ARG RAY_VERSION=2.60.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0

COPY constraints.txt docker/prune-site.sh /tmp/radgate-pip/
RUN pip install -c /tmp/radgate-pip/constraints.txt "ray[serve,train]==${RAY_VERSION}" \
    && sh /tmp/radgate-pip/prune-site.sh \
    && rm -rf /tmp/radgate-pip \
    && useradd --uid 1000 --gid 100 --create-home --home-dir /home/ray --shell /bin/bash ray

USER 1000:100
WORKDIR /home/ray
# A node is healthy when its local raylet answers.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["ray", "health-check", "--skip-version-check"]
CMD ["ray", "--version"]
