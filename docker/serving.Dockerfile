# syntax=docker/dockerfile:1
# RadGate serving app: Ray Serve (FastAPI ingress, one deployment per model) behind the
# governance gate; forward passes in-process or on Triton (tritonclient, gRPC).
#   docker build -f docker/serving.Dockerfile -t radgate/serving .        (from the repo root)
# Ray's own image: the Ray and Python versions match the cluster's (KubeRay RayService pods run
# it), and KubeRay's probes find the tools they use. It runs as the image's non-root user `ray`.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311
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
COPY --chown=1000:100 docker/config/serve.yaml /home/ray/serve.yaml
COPY --chmod=0755 docker/healthcheck.py /home/ray/healthcheck.py
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/radgate-entrypoint

USER 1000:100
WORKDIR /home/ray
EXPOSE 8000
# Ray Serve's proxy answers /-/healthz without credentials (the API's /healthz needs a token).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/home/ray/healthcheck.py", "http", "http://127.0.0.1:8000/-/healthz"]
ENTRYPOINT ["/usr/local/bin/radgate-entrypoint", "radgate"]
CMD ["serve", "/home/ray/serve.yaml"]
