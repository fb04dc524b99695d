# syntax=docker/dockerfile:1
# MLflow tracking + registry server for RadGate: PostgreSQL backend store, S3 artifacts
# (proxied: clients need no S3 credentials). The same MLflow release RadGate is tested with
# (constraints.txt, shared with the venv).
#   docker build -f docker/mlflow.Dockerfile -t radgate/mlflow .          (from the repo root)
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PIP_CONFIG_FILE
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

COPY constraints.txt docker/mlflow.requirements.txt docker/prune-site.sh /tmp/radgate-pip/
RUN pip install -c /tmp/radgate-pip/constraints.txt -r /tmp/radgate-pip/mlflow.requirements.txt \
    && sh /tmp/radgate-pip/prune-site.sh \
    && rm -rf /tmp/radgate-pip \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/mlflow mlflow
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/radgate-entrypoint
COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/radgate-healthcheck

USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/radgate-healthcheck", "http", "http://127.0.0.1:5000/health"]
ENTRYPOINT ["/usr/local/bin/radgate-entrypoint"]
# The backend URL carries no password: libpq reads PGPASSWORD (set from PGPASSWORD_FILE).
# --allowed-hosts: MLflow 3 answers 403 ("possible DNS rebinding attack") to a Host header that is
# not localhost or an IP, such as the compose service name the other containers use.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", \
     "--backend-store-uri", "postgresql+psycopg://radgate@postgres:5432/mlflow", \
     "--artifacts-destination", "s3://mlflow/artifacts", "--serve-artifacts", \
     "--allowed-hosts", "mlflow,mlflow:5000,localhost,localhost:5000,127.0.0.1,127.0.0.1:5000"]
