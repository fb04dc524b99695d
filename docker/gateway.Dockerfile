# syntax=docker/dockerfile:1
# RadGate intake gateway: C-STORE SCP (DIMSE, port 11112) + STOW-RS (HTTP, port 8042).
#   docker build -f docker/gateway.Dockerfile -t radgate/gateway .        (from the repo root)
#   scripts/containers.sh build gateway                                   (podman, local bases)
# Settings come from the environment at run time (RADGATE_CATALOG_URL, RADGATE_OBJECT_STORE,
# AWS_*); secrets from mounted files (RADGATE_KEY_FILE, PACS passwords): none is in a layer, and
# docker/gateway.Dockerfile.dockerignore keeps .radgate/, .env and keys out of the context.
# Intake needs no torch, Ray or MLflow (none of its code paths imports them): leaving them out
# keeps the image small (RADGATE_WITHOUT); versions of the rest come from constraints.txt.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG RADGATE_EXTRAS=postgres,s3
ARG RADGATE_WITHOUT="torch monai pytorch-lightning captum ray mlflow"
# Where pip finds torch's CPU build (unused when torch is left out); empty: PyPI only.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# A pip.conf mounted at build time (CA bundle, local wheels); never copied into the image.
ARG PIP_CONFIG_FILE
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TCP_NODELAY=1 \
    RADGATE_HOME=/var/lib/radgate

# Burned-in text OCR on intake: Tesseract's English model (the tesserocr wheel bundles libtesseract).
# OpenCV is its headless build, which links no libGL or GLib (docker/requirements.py).
# Debian stable: the suite pins the versions (security updates only).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
# Editable install at /opt/radgate: the code finds its shipped configs (deid profiles, policy)
# next to the packages, as in a checkout. Dependencies first, so code edits reuse this layer.
WORKDIR /opt/radgate
COPY constraints.txt pyproject.toml README.md docker/requirements.py docker/prune-site.sh ./
RUN python requirements.py pyproject.toml "${RADGATE_EXTRAS}" "${RADGATE_WITHOUT}" --no-deps-to no-deps.txt > requirements.txt \
    && pip install ${TORCH_INDEX:+--extra-index-url "${TORCH_INDEX}"} -c constraints.txt -r requirements.txt \
    && if [ -s no-deps.txt ]; then pip install --no-deps -c constraints.txt -r no-deps.txt; fi \
    && sh prune-site.sh \
    && mkdir radgate imaging training serving governance \
    && touch radgate/__init__.py imaging/__init__.py training/__init__.py serving/__init__.py governance/__init__.py \
    && pip install --no-deps -e . \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/radgate radgate \
    && mkdir -p /var/lib/radgate /etc/radgate \
    && chown radgate:radgate /var/lib/radgate
COPY radgate ./radgate
COPY imaging ./imaging
COPY training ./training
COPY serving ./serving
COPY governance ./governance
COPY configs ./configs
COPY configs/gateway/gateway.yaml /etc/radgate/gateway.yaml
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/radgate-healthcheck
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/radgate-entrypoint

USER 10001:10001
WORKDIR /var/lib/radgate
VOLUME ["/var/lib/radgate"]
EXPOSE 11112 8042
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/radgate-healthcheck", "tcp", "127.0.0.1", "11112"]
ENTRYPOINT ["/usr/local/bin/radgate-entrypoint", "radgate"]
CMD ["gateway", "--config", "/etc/radgate/gateway.yaml"]
