# syntax=docker/dockerfile:1
# RadGate reviewer web UI (FastAPI + templates): model cards, evaluations, explanations,
# approvals. It reads the catalog and MLflow; it holds no model weights and needs no GPU.
#   docker build -f docker/ui.Dockerfile -t radgate/ui .                  (from the repo root)
FROM python:3.11-slim-bookworm

ARG RADGATE_EXTRAS=postgres,s3
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RADGATE_HOME=/var/lib/radgate

WORKDIR /opt/radgate
COPY pyproject.toml README.md ./
RUN mkdir radgate imaging training serving governance \
    && touch radgate/__init__.py imaging/__init__.py training/__init__.py serving/__init__.py governance/__init__.py \
    && pip install -e ".[${RADGATE_EXTRAS}]" \
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
CMD ["ui", "--host", "0.0.0.0", "--port", "8080"]
