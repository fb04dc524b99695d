# syntax=docker/dockerfile:1
# RadGate serving app: Ray Serve (FastAPI ingress, one deployment per model) behind the
# governance gate; forward passes in-process or on Triton (tritonclient, gRPC).
#   docker build -f docker/serving.Dockerfile -t radgate/serving .        (from the repo root)
# Ray's own image: the Ray and Python versions match the cluster's (KubeRay RayService pods run
# it), and KubeRay's probes find the tools they use. It runs as the image's non-root user `ray`.
# CPU (default): Ray's CPU image or localhost/radgate/ray:2.60.0-cpu (docker/ray.Dockerfile); torch's
# CPU build from TORCH_INDEX. GPU replicas: RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu TORCH_INDEX="".
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311
FROM ${RAY_IMAGE}

ARG RADGATE_EXTRAS=postgres,s3,triton
# Serving de-identifies nothing: the OCR engines stay out (tests/unit/test_image_imports.py
# imports the serving app without them).
ARG RADGATE_WITHOUT="rapidocr-onnxruntime tesserocr opencv-python onnxruntime pyclipper shapely"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
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
COPY docker/config/serve.yaml /home/ray/serve.yaml
COPY --chmod=0755 docker/healthcheck.py /home/ray/healthcheck.py
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/radgate-entrypoint

USER 1000:100
WORKDIR /home/ray
EXPOSE 8000
# Ray Serve's proxy answers /-/healthz without credentials (the API's /healthz needs a token);
# serve.yaml serves HTTPS only, with the certificate and CA mounted under /run/radgate-tls.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/home/ray/healthcheck.py", "https", "https://localhost:8000/-/healthz", "/run/radgate-tls/ca.pem"]
ENTRYPOINT ["/usr/local/bin/radgate-entrypoint", "radgate"]
CMD ["serve", "/home/ray/serve.yaml"]
