"""The scale-out journey with only settings changed: the catalog on PostgreSQL 15, objects on an
S3-compatible server, MLflow as a tracking server on PostgreSQL with its artifacts proxied to S3,
and training on a separately started Ray head selected by ``RAY_ADDRESS``. Each service is a real
process on 127.0.0.1 started by the fixtures; tiny images, one epoch, two Ray Train workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import load_script

# The whole scale-out journey (PostgreSQL + S3 + MLflow server + Ray head) takes 5-7 min on
# 2 cores: run by hand with `scripts/test.sh -m slow`; its pieces run by default elsewhere.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

pg_ci = load_script("scripts/ci/postgres.py", "radgate_ci_postgres")
s3_ci = load_script("scripts/ci/s3.py", "radgate_ci_s3")
ray_ci = load_script("scripts/ci/ray_head.py", "radgate_ci_ray_head")
BUCKET = "radgate-scale"


@dataclass
class Platform:
    postgres: Any
    s3: Any
    ray: Any
    mlflow_url: str
    catalog_url: str

    def env(self) -> dict[str, str]:
        return {
            **self.s3.env(),
            "RADGATE_CATALOG_URL": self.catalog_url,
            "RADGATE_OBJECT_STORE": f"s3://{BUCKET}/store",
            "RADGATE_MLFLOW_TRACKING_URI": self.mlflow_url,
            "RAY_ADDRESS": self.ray.address,
        }


def _start_mlflow(workdir: Path, backend: str, s3_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = pg_ci.free_port()
    env = {**os.environ, **s3_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", backend, "--artifacts-destination", f"s3://{BUCKET}/mlflow",
        "--serve-artifacts", "--workers", "1",
    ]  # fmt: skip
    log = (workdir / "mlflow.log").open("ab")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(workdir / 'mlflow.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return process, url
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("mlflow server did not become healthy")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    if pg_ci.find_bindir() is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql-15)")
    import moto.server  # noqa: F401 (s3fs and moto come with the [test] extra: missing is a failure)
    import s3fs  # noqa: F401

    workdir = tmp_path_factory.mktemp("scaleout")
    pg_dir = pg_ci.scratch_dir()
    postgres = pg_ci.PostgresCluster(pg_dir)
    s3 = s3_ci.S3Server(workdir / "s3")
    ray = ray_ci.RayHead(num_cpus=2)
    mlflow = None
    try:
        postgres.start()
        catalog_url = postgres.create_database("radgate")
        mlflow_backend = postgres.create_database("mlflow")
        s3.start()
        s3.create_bucket(BUCKET)
        mlflow, mlflow_url = _start_mlflow(workdir, mlflow_backend, s3.env())
        ray.start()
        yield Platform(postgres, s3, ray, mlflow_url, catalog_url)
    finally:
        if mlflow is not None:
            mlflow.terminate()
            try:
                mlflow.wait(20)
            except subprocess.TimeoutExpired:
                mlflow.kill()
        ray.stop()
        s3.stop()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)


@pytest.fixture
def scaled(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    from s3fs import S3FileSystem

    from governance.settings import get_settings

    for key, value in platform.env().items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    # fsspec caches filesystems per process with their endpoint: never reuse another module's.
    S3FileSystem.clear_instance_cache()
    yield platform
    S3FileSystem.clear_instance_cache()


def test_training_runs_on_the_ray_cluster_and_tracks_to_postgres_and_s3(
    scaled: Platform, tmp_path: Path, radgate_home: Path
) -> None:
    import ray
    from mlflow.tracking import MlflowClient

    from governance.settings import get_settings
    from governance.tags import Tag as ModelTag
    from imaging.datasets import create_dataset
    from imaging.demo_data import write_demo_studies
    from imaging.ingest import Ingestor
    from training.config import validate_config
    from training.registry import load_model
    from training.run import train

    settings = get_settings()
    assert settings.ray_address == scaled.ray.address
    demo = write_demo_studies(tmp_path / "in", patients=12, images_per_patient=2, seed=5, size=32)
    ingestor = Ingestor()
    for path in demo.files:
        ingestor.ingest_path(path)
    dataset = create_dataset("scale", demo.labels_csv, label_names=["no_finding", "opacity"]).version
    config = validate_config(
        {
            "name": "scale",
            "data": {"dataset": "scale", "spatial_size": [16, 16], "batch_size": 8},
            "model": {"network": "resnet18"},
            "optim": {"max_epochs": 1},
            # No ray_address here: RAY_ADDRESS alone points training at the cluster.
            "run": {"experiment": "scaleout", "workers": 2, "cpus_per_worker": 1},
            "evaluation": {"min_subgroup_size": 1},
            "registry": {"model_name": "scale-model"},
        }
    )
    outcome = train(config)

    # The run and the registry live in MLflow's PostgreSQL database...
    client = MlflowClient(scaled.mlflow_url, registry_uri=scaled.mlflow_url)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["radgate.dataset_version"] == dataset.id
    assert len(client.get_metric_history(outcome.run_id, "train_loss")) == 1
    status = scaled.postgres.query("mlflow", f"SELECT status FROM runs WHERE run_uuid = '{outcome.run_id}'")
    assert status == [("FINISHED",)]
    versions = scaled.postgres.query(
        "mlflow", "SELECT count(*) FROM model_versions WHERE name = 'scale-model'"
    )
    assert versions[0][0] == 1
    assert not list(radgate_home.glob("*.db")), "no embedded SQLite store may be created"
    # ...its artifacts in the bucket (proxied by the server), and the model loads back verified.
    artifacts = scaled.s3.keys(BUCKET, "mlflow/")
    assert any(key.endswith("model_card.md") for key in artifacts), artifacts[:10]
    assert outcome.model_version is not None
    version = client.get_model_version("scale-model", outcome.model_version)
    assert version.tags[ModelTag.ARTIFACT_SHA256] == outcome.artifact_sha256
    loaded = load_model(f"scale-model/{outcome.model_version}")
    assert loaded.artifact_sha256 == outcome.artifact_sha256
    # The de-identified objects are in the bucket, the catalog rows in PostgreSQL.
    assert len(scaled.s3.keys(BUCKET, "store/")) == len(demo.files)
    assert scaled.postgres.query("radgate", "SELECT count(*) FROM instances")[0][0] == len(demo.files)
    assert outcome.fit.workers == 2

    # The Ray Train job ran on the separately started head (this process was its driver).
    ray.init(address=scaled.ray.address, log_to_driver=False)
    try:
        from ray._private.state import jobs

        ours = [job for job in jobs() if job["DriverPid"] == os.getpid()]
    finally:
        ray.shutdown()
    assert any(job["IsDead"] for job in ours), ours
