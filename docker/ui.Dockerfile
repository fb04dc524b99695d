# syntax=docker/dockerfile:1
# RadGate reviewer web UI (FastAPI + templates): model cards, evaluations, explanations,
# approvals. It reads the catalog and MLflow; it holds no model weights and needs no GPU.
#   docker build -f docker/ui.Dockerfile -t radgate/ui .                  (from the repo root)
#   scripts/containers.sh build ui                                        (podman, local bases)
# The image serves what training and serving recorded (--no-demo): the synthetic demo case,
# which runs a network and Captum, is a workstation feature, so torch, Ray and MONAI stay out.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG RADGATE_EXTRAS=postgres,s3
# No de-identification runs here: the OCR engines (RapidOCR, Tesseract, OpenCV, ONNX Runtime)
# stay out too (tests/unit/test_image_imports.py imports the UI without them).
ARG RADGATE_WITHOUT="torch monai pytorch-lightning captum ray rapidocr-onnxruntime tesserocr opencv-python onnxruntime pyclipper shapely"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_CONFIG_FILE
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RADGATE_HOME=/var/lib/radgate

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
    && mkdir -p /var/lib/radgate \
    && chown radgate:radgate /var/lib/radgate
COPY radgate ./radgate
COPY imaging ./imaging
COPY training ./training
COPY serving ./serving
COPY governance ./governance
COPY configs ./configs
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/radgate-healthcheck
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/radgate-entrypoint

USER 10001:10001
WORKDIR /var/lib/radgate
EXPOSE 8080
# The sign-in page answers without a session.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/radgate-healthcheck", "http", "http://127.0.0.1:8080/ui/login"]
ENTRYPOINT ["/usr/local/bin/radgate-entrypoint", "radgate"]
# Behind an HTTPS proxy (as it should be), add --secure-cookie.
CMD ["ui", "--host", "0.0.0.0", "--port", "8080", "--no-demo"]
