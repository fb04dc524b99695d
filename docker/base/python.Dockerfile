# syntax=docker/dockerfile:1
# A stand-in for python:3.11-slim-bookworm where no registry can be reached: Debian's Python 3.11
# in a venv at /usr/local (so `python` and `pip` are on PATH as in the official image) with a
# recent pip (Debian's pip 23 backtracked for 12+ minutes over ray/s3fs/botocore).
#   scripts/containers.sh bases       (debootstrap -> localhost/debian:bookworm -> this image)
ARG DEBIAN_IMAGE=localhost/debian:bookworm
FROM ${DEBIAN_IMAGE}

# PIP_CONFIG_FILE names a pip.conf mounted at build time (host CA bundle, local wheels); unset or
# empty pip uses PyPI. It is a build argument only: no pip settings are left in the image.
ARG PIP_CONFIG_FILE
ARG PIP_VERSION=26.3
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8

# Debian stable: the suite pins the versions (security updates only).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
    && python3 -m venv /usr/local \
    && ln -sf python3 /usr/local/bin/python \
    && /usr/local/bin/python -m pip install "pip==${PIP_VERSION}" \
    && /usr/local/bin/pip --version

CMD ["python3"]
