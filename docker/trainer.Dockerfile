# syntax=docker/dockerfile:1
# RadGate trainer and Ray cluster node (head and GPU workers): MONAI + Lightning on Ray Train.
#   docker build -f docker/trainer.Dockerfile -t radgate/trainer .        (from the repo root)
# CUDA base: Ray's GPU image (NVIDIA CUDA runtime + cuDNN, Ray 2.60, Python 3.11), so the
# driver, head and workers run the same Ray and Python, which Ray requires. torch==2.13.0 from
# PyPI is its CUDA build. Non-root: the image's user `ray` (uid 1000).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

ARG RADGATE_EXTRAS=postgres,s3,triton
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RADGATE_HOME=/home/ray/radgate

# Editable install in the user's home (WORKDIR would create a root-owned directory): the code
# finds its shipped configs (deid profiles, policy) next to the packages, as in a checkout.
RUN mkdir -p /home/ray/app
WORKDIR /home/ray/app
COPY --chown=1000:100 pyproject.toml README.md ./
RUN mkdir radgate imaging training serving governance \
    && touch radgate/__init__.py imaging/__init__.py training/__init__.py serving/__init__.py governance/__init__.py \
    && pip install -e ".[${RADGATE_EXTRAS}]" \
    && mkdir -p /home/ray/radgate
COPY --chown=1000:100 radgate ./radgate
COPY --chown=1000:100 imaging ./imaging
COPY --chown=1000:100 training ./training
COPY --chown=1000:100 serving ./serving
COPY --chown=1000:100 governance ./governance
COPY --chown=1000:100 configs ./configs
COPY --chmod=0755 docker/healthcheck.py /home/ray/healthcheck.py
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/radgate-entrypoint

USER 1000:100
WORKDIR /home/ray
# Ray node: GCS 6379, Ray Client 10001, dashboard 8265 (head only).
EXPOSE 6379 10001 8265
# A node is healthy when its local raylet answers (head and workers alike).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["ray", "health-check", "--skip-version-check"]
ENTRYPOINT ["/usr/local/bin/radgate-entrypoint"]
CMD ["radgate", "train", "--help"]
