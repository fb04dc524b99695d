"""The KubeRay manifests' entrypoints run on a local Ray head started as their RayCluster spec starts it.

No Kubernetes runs here, so what KubeRay would do is done by hand with the same inputs:
``ray start --head`` with the RayService head group's ``rayStartParams`` (addresses moved to
127.0.0.1, free ports) and token authentication as ``authOptions: {mode: token}`` asks; the RayJob's
``entrypoint`` submitted with ``ray job submit`` (its config and command as written; the GPU count
and the recipe's size overridden with ``--set`` to fit two CPUs); then the RayService's
``serveConfigV2`` deployed with ``serve deploy`` with the serving config its ConfigMap mounts, which
answers an authenticated health request through Ray Serve's proxy. What only a cluster does
(pods, probes, the operator's upgrades, GPU scheduling, the mounted ConfigMap) is not run here.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from serving.net import free_port
from tests.integration.conftest import load_script

# About 2.5 min for the serve deploy and 5 min for the training job on the shared 2-core machine:
# run with `scripts/test.sh -m slow`; tests/unit/test_deploy_entrypoints.py resolves the same
# entrypoints in the default run.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "docker" / "k8s"
ray_ci = load_script("scripts/ci/ray_head.py", "radgate_ci_ray_head")
MODEL = "chest-opacity"  # the model the RayService's ConfigMap serves and the RayJob registers


def _manifest(name: str, kind: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d and d["kind"] == kind]
    assert len(docs) == 1, f"{name}: expected one {kind}"
    return docs[0]


def _config_map(name: str) -> dict[str, str]:
    for path in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == name:
                return dict(doc["data"])
    raise AssertionError(f"no ConfigMap {name}")


@dataclass
class Cluster:
    head: Any
    dashboard: str
    cast: Any
    home: Path

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """A Ray CLI (``ray``, ``serve``) of this venv against the head, with the cluster's token."""
        executable = str(Path(sys.executable).with_name(args[0]))
        return subprocess.run(
            [executable, *args[1:]], capture_output=True, text=True, env=self.head.env(), timeout=timeout
        )


@pytest.fixture(scope="module")
def radgate_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One RADGATE_HOME for the module (replacing the per-test one): the head's processes (job
    drivers, Serve replicas) inherit it, as the pods get theirs from the radgate-settings ConfigMap;
    the catalog and MLflow are embedded in it."""
    from governance.settings import get_settings

    home = tmp_path_factory.mktemp("kuberay-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADGATE_HOME", str(home))
        mp.setenv("RADGATE_PROJECT_KEY", "44" * 32)
        for name in (
            "RADGATE_CATALOG_URL",
            "RADGATE_MLFLOW_TRACKING_URI",
            "RADGATE_OBJECT_STORE",
            "RAY_ADDRESS",
        ):
            mp.delenv(name, raising=False)
        get_settings.cache_clear()
        yield home
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def cluster(radgate_home: Path) -> Iterator[Cluster]:
    from governance.testing import create_cast

    service = _manifest("rayservice.yaml", "RayService")["spec"]["rayClusterConfig"]
    assert service["authOptions"]["mode"] == "token"
    params = {key: str(value) for key, value in service["headGroupSpec"]["rayStartParams"].items()}
    # Listen on loopback only, on free ports; KubeRay starts the head's dashboard (its job and
    # Serve REST API) on the pod IP.
    params["dashboard-host"] = "127.0.0.1"
    dashboard_port = free_port()
    params.update({"include-dashboard": "true", "dashboard-port": str(dashboard_port)})
    cast = create_cast()
    head = ray_ci.RayHead(num_cpus=2, start_params=params, auth_token=secrets.token_hex(32))
    head.start(timeout=180)
    try:
        yield Cluster(head, f"http://127.0.0.1:{dashboard_port}", cast, radgate_home)
    finally:
        head.stop()


def test_rayjob_entrypoint_trains_and_registers_via_ray_job_submit(cluster: Cluster, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from governance.settings import get_settings
    from imaging.datasets import create_dataset
    from imaging.demo_data import write_demo_studies
    from imaging.ingest import Ingestor

    job = _manifest("rayjob-train.yaml", "RayJob")["spec"]
    demo = write_demo_studies(tmp_path / "in", patients=12, images_per_patient=2, seed=5, size=32)
    ingestor = Ingestor()
    for path in demo.files:
        ingestor.ingest_path(path)
    config = yaml.safe_load(
        Path(shlex.split(job["entrypoint"])[2].replace("/home/ray/app/", f"{REPO}/")).read_text()
    )
    create_dataset(config["data"]["dataset"], demo.labels_csv, label_names=["no_finding", "opacity"])

    # The entrypoint as written (its image's paths mapped to this checkout), on CPUs and small.
    words = shlex.split(job["entrypoint"])
    words[2] = words[2].replace("/home/ray/app/", f"{REPO}/")
    words[words.index("--gpus-per-worker") + 1] = "0"
    shrink = ["run.cpus_per_worker=1", "model.network=resnet18", "data.spatial_size=[16,16]",
              "data.batch_size=8", "optim.max_epochs=1", "evaluation.min_subgroup_size=1",
              "run.experiment=rayjob"]  # fmt: skip
    words += [arg for value in shrink for arg in ("--set", value)]
    words[0] = str(Path(sys.executable).with_name("radgate"))
    runtime_env = {"env_vars": {"RADGATE_TOKEN": cluster.cast.tokens["eng"]}}
    submitted = cluster.cli(
        "ray", "job", "submit", f"--address={cluster.dashboard}",
        f"--runtime-env-json={json.dumps(runtime_env)}", "--", *words,
        timeout=600,
    )  # fmt: skip
    tail = (submitted.stdout + submitted.stderr)[-4000:]
    assert submitted.returncode == 0, tail
    assert "succeeded" in submitted.stdout.lower(), tail

    # The job's driver trained on the head's Ray Train workers and registered a version.
    uri = get_settings().resolved_mlflow_uri
    client = MlflowClient(uri, registry_uri=uri)
    versions = client.search_model_versions(f"name='{config['registry']['model_name']}'")
    assert versions, tail
    run = client.get_run(str(versions[0].run_id))
    assert run.info.status == "FINISHED"
    assert run.data.params.get("workers", "2") == "2"
    jobs = cluster.cli("ray", "job", "list", f"--address={cluster.dashboard}")
    assert jobs.returncode == 0 and "SUCCEEDED" in jobs.stdout, jobs.stdout[-2000:]


def test_rayservice_serve_config_deploys_and_answers_health(cluster: Cluster, tmp_path: Path) -> None:
    from serving.testing import approve_and_promote, register_model

    spec = _manifest("rayservice.yaml", "RayService")["spec"]
    # A version the gate lets through (the RayJob's one-epoch model is not one the policy approves).
    version = register_model(f"{MODEL}-served", seed=4)
    approve_and_promote(f"{MODEL}-served", version, cluster.cast)

    # The serving config the pods mount (ConfigMap radgate-serve-config): the same file, with the
    # forward pass in-process (Triton, a GPU service of its own, does not run here) and the
    # version registered above.
    pod = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "configMap" in v)
    serve_config = yaml.safe_load(_config_map(volume["configMap"]["name"])["serve.yaml"])
    for model in serve_config["models"]:
        model.update({"name": f"{MODEL}-served", "backend": "inprocess"})
        model.pop("triton_url", None)
    local_serve = tmp_path / "serve.yaml"
    local_serve.write_text(yaml.safe_dump(serve_config))

    # serveConfigV2 as written, its HTTP proxy on loopback and its args.config at that file.
    v2 = yaml.safe_load(spec["serveConfigV2"])
    port = free_port()
    v2["http_options"].update({"host": "127.0.0.1", "port": port})
    for app in v2["applications"]:
        assert Path(app["args"]["config"]).name == "serve.yaml"
        app["args"]["config"] = str(local_serve)
    config_file = tmp_path / "serve-config-v2.yaml"
    config_file.write_text(yaml.safe_dump(v2))

    deployed = cluster.cli("serve", "deploy", str(config_file), f"--address={cluster.dashboard}")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    url = f"http://127.0.0.1:{port}/healthz"
    headers = {"Authorization": f"Bearer {cluster.cast.tokens['doc']}"}
    deadline = time.monotonic() + 300
    last: Any = None
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(url, headers=headers, timeout=10)
            last = reply.status_code, reply.text[:300]
            if reply.status_code == 200:
                break
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(2)
    else:
        status = cluster.cli("serve", "status", f"--address={cluster.dashboard}")
        pytest.fail(f"no healthy answer from {url}: {last}\n{status.stdout[-3000:]}")
    assert reply.json() == {"status": "ok", "models": {f"{MODEL}-served": True}}
    # Without a token the API refuses (the proxy still routes to RadGate's authentication).
    assert httpx.get(url, timeout=10).status_code == 401
    status = cluster.cli("serve", "status", f"--address={cluster.dashboard}")
    assert status.returncode == 0 and "RUNNING" in status.stdout, status.stdout[-2000:]
    shutdown = cluster.cli("serve", "shutdown", "-y", f"--address={cluster.dashboard}")
    assert shutdown.returncode == 0, shutdown.stderr[-2000:]
    assert os.environ["RADGATE_HOME"] == str(cluster.home)
