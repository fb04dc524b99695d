# syntax=docker/dockerfile:1
# RadGate trainer and Ray cluster node (head and GPU workers): MONAI + Lightning on Ray Train.
#   docker build -f docker/trainer.Dockerfile -t radgate/trainer .        (from the repo root)
# The driver, head and workers run the same Ray and Python, which Ray requires. Non-root: `ray` (uid 1000).
# GPU (default): Ray's CUDA image, torch==2.13.0 from PyPI is its CUDA build (TORCH_INDEX empty).
# CPU: RAY_IMAGE=localhost/radgate/ray:2.60.0-cpu (docker/ray.Dockerfile, the same Python base as
# the other images) and TORCH_INDEX=https://download.pytorch.org/whl/cpu (or a local wheel dir).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

ARG RADGATE_EXTRAS=postgres,s3,triton
ARG RADGATE_WITHOUT=""
ARG TORCH_INDEX=
# A pip.conf mounted at build time (CA bundle, local wheels); never copied into the image.
ARG PIP_CONFIG_FILE
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RADGATE_HOME=/home/ray/radgate

# Editable install in the user's home (WORKDIR would create a root-owned directory): the code
# finds its shipped configs (deid profiles, policy) next to the packages, as in a checkout.
# Installed as root (the Python of Ray's images is writable by `ray`, the local CPU base's is not);
# the code stays read-only to the user that runs it.
USER 0
# Burned-in text OCR on intake (distributed ingest runs on the Ray nodes): Tesseract's English model (the tesserocr wheel bundles libtesseract).
# OpenCV is its headless build, which links no libGL or GLib (docker/requirements.py).
# Debian stable: the suite pins the versions (security updates only).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
WORKDIR /home/ray/app
COPY pyproject.toml README.md constraints.txt docker/requirements.py docker/prune-site.sh ./
RUN python requirements.py pyproject.toml "${RADGATE_EXTRAS}" "${RADGATE_WITHOUT}" --no-deps-to no-deps.txt > requirements.txt \
    && pip install ${TORCH_INDEX:+--extra-index-url "${TORCH_INDEX}"} -c constraints.txt -r requirements.txt \
    && if [ -s no-deps.txt ]; then pip install --no-deps -c constraints.txt -r no-deps.txt; fi \
    && sh prune-site.sh \
    && mkdir radgate imaging training serving governance \
    && touch radgate/__init__.py imaging/__init__.py training/__init__.py serving/__init__.py governance/__init__.py \
    && pip install --no-deps -e . \
    && mkdir -p /home/ray/radgate \
    && chown 1000:100 /home/ray/radgate
COPY radgate ./radgate
COPY imaging ./imaging
COPY training ./training
COPY serving ./serving
COPY governance ./governance
COPY configs ./configs
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
