"""Static checks of the deployment files (no Docker engine or Kubernetes cluster runs here):
hadolint on every Dockerfile, the compose file against the Compose Specification schema,
KubeRay manifests against KubeRay's CRD schemas (vendored in docker/k8s/schemas), built-in Kubernetes
kinds and every pod template with kubernetes-validate (strict: a misspelt key fails), and the
platform's own rules: non-root images with health checks, secrets only as files or secret refs,
GPU resources where training and inference run, configs that load with RadGate's own loaders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
KUBERAY_SCHEMAS = K8S / "schemas"  # vendored KubeRay CRD schemas (see its README.md)
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|^RADGATE_PROJECT_KEY$|ACCESS_KEY", re.IGNORECASE)
OUR_IMAGES = {"gateway", "serving", "trainer", "ui", "mlflow"}


def _tool(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    # Every tool used here comes with the [test] extra: missing is a broken test environment.
    assert found is not None, f"{name} is not installed (pip install -e '.[test]')"
    return found


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if not path.name.endswith("-values.yaml")
        for doc in _documents(path)
    ]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


# --- Dockerfiles -----------------------------------------------------------------------------


def test_every_image_the_issue_names_has_a_dockerfile() -> None:
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES} >= {
        "gateway",
        "serving",
        "trainer",
        "ui",
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean_with_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and not findings, [
        f"{f['line']}: {f['code']} {f['message']}" for f in findings
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_non_root_with_a_health_check(dockerfile: Path) -> None:
    steps = _instructions(dockerfile)
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    final = users[-1].split(":")[0]
    assert final not in {"root", "0"}, f"final USER is {users[-1]}"
    last_user = max(i for i, (keyword, _) in enumerate(steps) if keyword == "USER")
    assert not any(k == "RUN" for k, _ in steps[last_user + 1 :]), "RUN after the final USER"
    health = [rest for keyword, rest in steps if keyword == "HEALTHCHECK"]
    assert health and "NONE" not in health[-1].upper()
    if dockerfile.name == "trainer.Dockerfile":  # CUDA base: Ray's GPU image (nvidia/cuda + cuDNN)
        assert ("FROM", "${RAY_IMAGE}") in steps
        assert re.search(r"RAY_IMAGE=rayproject/ray:[\d.]+-py311-(gpu|cu\d+)", dockerfile.read_text())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_secret_is_baked_into_a_layer(dockerfile: Path) -> None:
    for keyword, rest in _instructions(dockerfile):
        if keyword in {"ENV", "ARG"}:
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest) or [rest.split()[0]]
            assert not [n for n in names if SECRET_NAME.search(n)], f"{keyword} {rest}"
        if keyword in {"COPY", "ADD"}:
            sources = [s for s in rest.split() if not s.startswith("--")][:-1]
            assert not [s for s in sources if re.search(r"\.env$|\.key$|\.pem$|secrets|\.radgate", s)], rest
    # The build context is an allow-list: state, keys and env files never reach the builder.
    ignore = Path(f"{dockerfile}.dockerignore")
    assert ignore.exists(), f"{ignore.name} missing"
    patterns = [
        line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    assert not [
        p for p in patterns if p.startswith("!") and re.search(r"\.radgate|\.env|secrets|\.venv|key", p)
    ]
    assert {"**/.env", "**/*.key"} <= set(patterns)


def test_entrypoint_turns_secret_files_into_variables(tmp_path: Path) -> None:
    secret = tmp_path / "pg"
    secret.write_text("s3cr3t\n")
    env = {
        "PATH": os.environ["PATH"],
        "PGPASSWORD_FILE": str(secret),
        "RADGATE_KEY_FILE": "/keys/project.key",
    }
    show = 'printf "%s|%s" "$PGPASSWORD" "${RADGATE_KEY-unset}"'
    result = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "sh", "-c", show],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout == "s3cr3t|unset", result.stderr
    env["PGPASSWORD_FILE"] = str(tmp_path / "missing")
    failed = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "true"], capture_output=True, text=True, env=env
    )
    assert failed.returncode == 64 and "PGPASSWORD_FILE" in failed.stderr and "s3cr3t" not in failed.stderr


def test_healthcheck_script_reports_up_and_down() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        script = [sys.executable, str(DOCKER / "healthcheck.py")]
        assert subprocess.run([*script, "tcp", "127.0.0.1", str(port)], timeout=30).returncode == 0
    assert subprocess.run([*script, "tcp", "127.0.0.1", str(port)], timeout=30).returncode == 1


# --- compose -------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DOCKER / "compose.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_brings_up_the_whole_platform() -> None:
    services = _compose()["services"]
    images = {name: str(s.get("image", "")) for name, s in services.items()}
    assert images["postgres"].startswith("postgres:15")
    assert images["minio"].startswith("minio/minio:")
    assert images["triton"].startswith("nvcr.io/nvidia/tritonserver:")
    assert images["orthanc"].startswith("orthancteam/orthanc:")
    for role in ("mlflow", "ray-head", "ray-worker", "gateway", "serving", "ui", "trainer"):
        assert role in services
    # Third-party images are pinned; ours are built from the Dockerfiles checked above.
    for name, image in images.items():
        if not image.startswith("radgate/"):
            assert ":" in image and not image.endswith(":latest"), name
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).resolve().is_file(), name
    # GPUs where training and inference run.
    for name in ("ray-worker", "triton"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert services["ray-worker"]["deploy"]["replicas"] >= 2
    # Ray needs a real /dev/shm (Docker's default is 64 MiB).
    assert all("shm_size" in services[n] for n in ("ray-head", "ray-worker", "serving"))


def test_compose_keeps_secrets_in_files_and_checks_health() -> None:
    compose = _compose()
    declared = set(compose["secrets"])
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use a mapping for environment"
        targets = {s["target"] for s in service.get("secrets", []) if isinstance(s, dict) and "target" in s}
        for key, value in env.items():
            # A setting that names the file of a mounted secret (Orthanc's TLS key) is a path.
            inline = SECRET_NAME.search(key) and not key.endswith("_FILE") and str(value) not in targets
            if inline and key != "RAY_AUTH_TOKEN_PATH":
                pytest.fail(f"{name}: {key} is set inline; mount a secret and use {key}_FILE")
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)), (
                f"{name}: credentials in a URL ({key})"
            )
        used = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        assert used <= declared, f"{name}: undeclared secrets {used - declared}"
        for key, value in env.items():
            if key.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                assert str(value).removeprefix("/run/secrets/") in used, (
                    f"{name}: {key} names an unmounted secret"
                )
        image = str(service.get("image", ""))
        ours = image.startswith("radgate/")
        long_running = service.get("restart") not in (None, "no") and "profiles" not in service
        if long_running and not ours:
            assert "healthcheck" in service, f"{name} has no health check"
        if ours:
            dockerfile = DOCKER / f"{image.split('/')[1].split(':')[0]}.Dockerfile"
            assert dockerfile.exists(), f"{name}: no Dockerfile for {image}"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    assert (DOCKER / "secrets" / ".gitignore").read_text().split()[0] == "*"


def test_compose_configs_load_with_radgate_loaders() -> None:
    from imaging.gateway.config import load_config
    from serving.config import load_serve_config

    gateway = load_config(DOCKER / "config" / "gateway.yaml")
    assert gateway.dicom.allowed_peers and not gateway.dicom.allow_any
    subnet = _compose()["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert all(subnet in peer.hosts for peer in gateway.dicom.allowed_peers)
    serve = load_serve_config(DOCKER / "config" / "serve.yaml")
    assert serve.host == "0.0.0.0" and all(m.triton_url.startswith("triton:") for m in serve.models)


# --- Kubernetes ----------------------------------------------------------------------------


def _kuberay_schema(kind: str) -> Path:
    path = KUBERAY_SCHEMAS / f"{kind.lower()}.schema.json"
    assert path.is_file(), f"KubeRay schema {path} missing from the repository"
    return path


def _check_jsonschema(schema: Path, instance: dict[str, Any], tmp_path: Path, name: str) -> None:
    target = tmp_path / f"{name}.json"
    target.write_text(json.dumps(instance))
    result = subprocess.run(
        [_tool("check-jsonschema"), "--schemafile", str(schema), str(target)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every RayCluster spec in the manifests: a RayCluster's, a RayJob's, a RayService's."""
    out = []
    for path, doc in _all_manifests():
        if doc["kind"] == "RayCluster":
            out.append((f"{path.name}:{doc['kind']}", doc["spec"]))
        elif doc["kind"] == "RayJob":
            out.append((f"{path.name}:{doc['kind']}", doc["spec"]["rayClusterSpec"]))
        elif doc["kind"] == "RayService":
            out.append((f"{path.name}:{doc['kind']}", doc["spec"]["rayClusterConfig"]))
    return out


def test_kuberay_manifests_cover_training_and_serving() -> None:
    kinds = {doc["kind"] for _, doc in _all_manifests() if doc["apiVersion"] == "ray.io/v1"}
    assert {"RayCluster", "RayJob", "RayService"} <= kinds


@pytest.mark.parametrize("kind", ["RayCluster", "RayService"])
def test_kuberay_manifests_validate_against_kuberay_schemas(kind: str, tmp_path: Path) -> None:
    schema = _kuberay_schema(kind)
    docs = [(path, doc) for path, doc in _all_manifests() if doc["kind"] == kind]
    assert docs
    for index, (path, doc) in enumerate(docs):
        _check_jsonschema(schema, doc, tmp_path, f"{path.stem}-{index}")


def test_rayjob_cluster_spec_validates_and_runs_radgate_train(tmp_path: Path) -> None:
    """No RayJob schema ships; its rayClusterSpec is a RayCluster spec, checked with that schema."""
    from training.config import load_config

    schema = _kuberay_schema("RayCluster")
    jobs = [doc for _, doc in _all_manifests() if doc["kind"] == "RayJob"]
    assert jobs
    for index, job in enumerate(jobs):
        spec = job["spec"]
        cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": job["metadata"],
                   "spec": spec["rayClusterSpec"]}  # fmt: skip
        _check_jsonschema(schema, cluster, tmp_path, f"rayjob-{index}")
        assert spec["submissionMode"] in {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
        assert spec["shutdownAfterJobFinishes"] is True
        words = spec["entrypoint"].split()
        assert words[:2] == ["radgate", "train"]
        config = Path(words[2].replace("/home/ray/app/", f"{REPO}/"))
        load_config(config)
        workers = int(words[words.index("--workers") + 1])
        gpus = float(words[words.index("--gpus-per-worker") + 1])
        gpu_slots = sum(
            int(group["replicas"]) * int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
            for group in spec["rayClusterSpec"]["workerGroupSpecs"]
            for container in group["template"]["spec"]["containers"]
        )
        assert workers * gpus <= gpu_slots, "the job asks for more GPUs than its worker groups have"


def test_ray_clusters_have_gpu_workers_token_auth_and_matching_versions() -> None:
    from importlib.metadata import version

    for name, spec in _cluster_specs():
        assert spec["rayVersion"] == version("ray"), name
        assert spec.get("authOptions", {}).get("mode") == "token", name
        gpus = [
            container["resources"]["limits"].get("nvidia.com/gpu")
            for group in spec["workerGroupSpecs"]
            for container in group["template"]["spec"]["containers"]
        ]
        assert any(gpus), f"{name}: no GPU worker group"


def test_pod_templates_and_builtin_kinds_validate_strictly_against_kubernetes() -> None:
    import kubernetes_validate

    version = kubernetes_validate.latest_version()

    def check(resource: dict[str, Any], where: str) -> None:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {str(exc).splitlines()[0]}")

    builtin = 0
    for path, doc in _all_manifests():
        if doc["apiVersion"] != "ray.io/v1":
            check(doc, f"{path.name}:{doc['kind']}/{doc['metadata']['name']}")
            builtin += 1
    assert builtin >= 5
    for name, spec in _cluster_specs():
        groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
        for group, group_spec in groups:
            template = group_spec["template"]
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{group}-pod"},
                "spec": template["spec"],
            }
            check(pod, f"{name} {group} pod template")


def test_pods_run_as_non_root_and_take_secrets_from_secret_refs() -> None:
    pods: list[tuple[str, dict[str, Any]]] = []
    for path, doc in _all_manifests():
        if doc["kind"] == "Deployment":
            pods.append((f"{path.name}:{doc['metadata']['name']}", doc["spec"]["template"]["spec"]))
    for name, spec in _cluster_specs():
        pods.append((f"{name} head", spec["headGroupSpec"]["template"]["spec"]))
        pods += [(f"{name} {g['groupName']}", g["template"]["spec"]) for g in spec["workerGroupSpecs"]]
    assert pods
    for where, spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            mounted = tuple(m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", []))
            for env in container.get("env", []):
                # (a variable that names a mounted file, e.g. Ray's RAY_TLS_SERVER_KEY, holds no secret)
                if SECRET_NAME.search(env["name"]) and not str(env.get("value", "")).startswith(
                    mounted or ("\0",)
                ):
                    assert "secretKeyRef" in env.get("valueFrom", {}), (
                        f"{where}: {env['name']} not from a Secret"
                    )
                assert not re.search(r"://[^/@\s]+:[^/@\s]+@", str(env.get("value", ""))), where
            for arg in container.get("args", []) + container.get("command", []):
                assert not re.search(r"://[^/@\s]+:[^/@\s]+@", arg), f"{where}: credentials in a URL"
    for path, doc in _all_manifests():
        assert doc["kind"] != "Secret", f"{path.name} commits a Secret"


def test_rayservice_serves_radgate_with_a_valid_serving_config() -> None:
    from serving.config import load_serve_config

    services = [doc for _, doc in _all_manifests() if doc["kind"] == "RayService"]
    maps = {doc["metadata"]["name"]: doc for _, doc in _all_manifests() if doc["kind"] == "ConfigMap"}
    for service in services:
        serve = yaml.safe_load(service["spec"]["serveConfigV2"])
        for app in serve["applications"]:
            config_path = Path(app["args"]["config"])
            mounted = [
                v["configMap"]["name"]
                for v in service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["volumes"]
                if "configMap" in v
            ]
            data = maps[mounted[0]]["data"][config_path.name]
            local = Path(os.environ.get("TMPDIR", "/tmp")) / f"radgate-serve-{os.getpid()}.yaml"
            local.write_text(data)
            try:
                config = load_serve_config(local)
            finally:
                local.unlink()
            assert config.host == "0.0.0.0"
            module_name, _, attribute = app["import_path"].partition(":")
            module = __import__(module_name, fromlist=[attribute])
            # Resolved and built in tests/unit/test_deploy_entrypoints.py; here: it exists.
            assert callable(getattr(module, attribute, None)), app["import_path"]


def test_settings_manifests_point_at_postgres_s3_mlflow_and_triton() -> None:
    settings = next(doc for _, doc in _all_manifests() if doc["kind"] == "ConfigMap"
                    and doc["metadata"]["name"] == "radgate-settings")["data"]  # fmt: skip
    assert settings["RADGATE_CATALOG_URL"].startswith("postgresql+psycopg://")
    assert settings["RADGATE_OBJECT_STORE"].startswith("s3://")
    assert settings["RADGATE_MLFLOW_TRACKING_URI"].startswith("https://radgate-mlflow:")  # TLS
    assert settings["RADGATE_TRITON_URL"].startswith("radgate-triton:")
    values = yaml.safe_load((K8S / "postgresql-values.yaml").read_text())
    assert values["auth"]["existingSecret"]
    assert not {"password", "postgresPassword"} & set(values["auth"]), "passwords belong in the Secret"
    assert "CREATE DATABASE mlflow" in values["primary"]["initdb"]["scripts"]["10-mlflow.sql"]


def test_readme_documents_the_scale_out_settings() -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Scale-out" in readme
    section = readme.split("## Scale-out", 1)[1]
    for variable in (
        "RADGATE_CATALOG_URL", "RADGATE_MLFLOW_TRACKING_URI", "RADGATE_OBJECT_STORE", "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RAY_ADDRESS", "RAY_AUTH_MODE", "RADGATE_TRITON_URL",
    ):  # fmt: skip
        assert variable in section, variable
    for path in ("docker/compose.yaml", "docker/k8s/rayjob-train.yaml", "docker/k8s/rayservice.yaml"):
        assert (REPO / path).exists() and Path(path).name in section


def test_make_secrets_creates_every_compose_secret_once(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    script = tmp_path / "make-secrets.sh"
    shutil.copy(DOCKER / "make-secrets.sh", script)
    # The TLS certificates come from `radgate certs dev` (this venv's).
    env = {"PATH": os.environ["PATH"], "RADGATE": str(Path(sys.executable).with_name("radgate"))}
    assert subprocess.run(["sh", str(script)], capture_output=True, env=env, timeout=120).returncode == 0
    root = tmp_path / "secrets"
    made = {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}
    assert {s["file"].removeprefix("./secrets/") for s in _compose()["secrets"].values()} <= set(made)
    # Separated keys: public halves match their private keys; the broker's private key is mounted nowhere.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    seed = bytes.fromhex(made["keys/audit-signing.key"].strip())
    public = (
        Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    assert made["keys/audit-signing.pub"].strip() == public.hex()
    mounted = {s["file"] for s in _compose()["secrets"].values()}
    assert "./secrets/keys/broker.pub" in mounted and "./secrets/keys/broker.key" not in mounted
    assert (root / "keys" / "broker.key").stat().st_mode & 0o077 == 0
    assert len(made["radgate_project_key"].strip()) == 64 and len(made["postgres_password"].strip()) >= 32
    assert json.loads(made["orthanc_users"]) == {"radgate": made["orthanc_password"].strip()}
    # TLS: the CA's key (and the generic server/client pair) stay here, readable by the owner only.
    for private in ("ca-key.pem", "server-key.pem", "client-key.pem"):
        assert (root / "tls" / private).stat().st_mode & 0o077 == 0, private
        assert f"./secrets/tls/{private}" not in mounted
    # A second run keeps what exists (rotating the project key would orphan every pseudonym).
    assert subprocess.run(["sh", str(script)], capture_output=True, env=env, timeout=120).returncode == 0
    assert (root / "tls" / "gateway.pem").read_text() == made["tls/gateway.pem"]
    assert (tmp_path / "secrets" / "radgate_project_key").read_text() == made["radgate_project_key"]
    assert (root / "keys" / "audit-signing.key").read_text() == made["keys/audit-signing.key"]


# --- images: bases, the one lock, CPU torch ----------------------------------------------------------


def _from_and_args(dockerfile: Path) -> tuple[str, dict[str, str]]:
    steps = _instructions(dockerfile)
    args = {}
    for keyword, rest in steps:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value.strip('"')
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert len(froms) == 1, f"{dockerfile.name}: one stage expected"
    return froms[0], args


ALL_DOCKERFILES = sorted(
    [*DOCKERFILES, *DOCKER.glob("peers/*.Dockerfile"), *DOCKER.glob("base/*.Dockerfile")]
)


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_image_takes_its_base_as_a_build_argument(dockerfile: Path) -> None:
    base, args = _from_and_args(dockerfile)
    match = re.fullmatch(r"\$\{([A-Z_]+)\}", base)
    assert match, f"{dockerfile.name}: FROM {base} is not a build argument"
    default = args[match.group(1)]
    official = re.compile(
        r"^(python:3\.11-slim-bookworm|debian:bookworm-slim|rayproject/ray:[\d.]+-py311(-gpu)?)$"
    )
    local = dockerfile.parent.name == "base"  # the stand-in for python:3.11-slim-bookworm
    assert official.match(default) or (local and default == "localhost/debian:bookworm"), default


def test_images_and_venv_install_from_one_lock() -> None:
    from importlib.metadata import version

    lock = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            lock[name.lower().replace("_", "-")] = pinned
    # torch: the release only; the index (CPU or CUDA) picks the build.
    assert lock["torch"] == "2.13.0" and "+" not in lock["torch"]
    assert '"torch==2.13.0"' in (REPO / "pyproject.toml").read_text()
    for name in ("ray", "mlflow", "pydicom", "sqlalchemy", "fastapi", "moto", "boto3"):
        assert lock[name] == version(name), f"{name}: venv {version(name)} vs constraints.txt {lock[name]}"
    assert "-c constraints.txt -e '.[test,postgres]'" in (REPO / "scripts" / "setup.sh").read_text()
    for dockerfile in ALL_DOCKERFILES:
        text = re.sub(r"\\\n", " ", dockerfile.read_text())
        for run in re.findall(r"^RUN (.*)$", text, re.M):
            for install in re.findall(r"pip install ([^&]*)", run):
                if "pip==" in install or "--no-deps" in install:
                    continue  # pip itself; RadGate's own code (its requirements came from the lock)
                assert re.search(r"-c \S*constraints\.txt", install), (
                    f"{dockerfile.name}: pip install {install}"
                )


def test_cpu_images_never_pull_the_cuda_torch() -> None:
    for name in ("gateway", "ui"):
        _, args = _from_and_args(DOCKER / f"{name}.Dockerfile")
        assert "torch" in args["RADGATE_WITHOUT"].split(), name  # no torch at all
    _, serving = _from_and_args(DOCKER / "serving.Dockerfile")
    assert serving["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert serving["RAY_IMAGE"].endswith("-py311")  # Ray's CPU image
    _, trainer = _from_and_args(DOCKER / "trainer.Dockerfile")
    assert trainer["RAY_IMAGE"].endswith("-gpu") and trainer["TORCH_INDEX"] == ""  # the GPU variant
    _, ray_cpu = _from_and_args(DOCKER / "ray.Dockerfile")
    assert ray_cpu["BASE_IMAGE"] == "python:3.11-slim-bookworm"
    script = (REPO / "scripts" / "containers.sh").read_text()
    assert "--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu" in script


def test_requirements_helper_leaves_out_what_an_image_does_not_need(tmp_path: Path) -> None:
    script = [sys.executable, str(DOCKER / "requirements.py"), str(REPO / "pyproject.toml")]
    deferred = ["--no-deps-to", str(tmp_path / "no-deps.txt")]  # RapidOCR: installed with --no-deps
    full = subprocess.run([*script, "postgres,s3", *deferred], capture_output=True, text=True, timeout=60)
    without = "torch monai pytorch-lightning captum ray mlflow"
    slim = subprocess.run(
        [*script, "postgres,s3", without, *deferred], capture_output=True, text=True, timeout=60
    )
    assert full.returncode == 0 and slim.returncode == 0, full.stderr + slim.stderr
    names = {re.split(r"[<>=!;\[ ]", line)[0].lower() for line in slim.stdout.split("\n") if line}
    assert {"pydicom", "sqlalchemy", "psycopg", "s3fs"} <= names
    assert not names & {"torch", "monai", "pytorch-lightning", "captum", "ray", "mlflow"}
    assert "torch==2.13.0" in full.stdout.split("\n") and "ray[serve,train]>=2.40" in full.stdout
    unknown = subprocess.run([*script, "nonsense"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode != 0 and "unknown extras: nonsense" in unknown.stderr


class _ComposeLoader(yaml.SafeLoader):
    """Compose's merge tags (!reset, !override) as plain values."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_ComposeLoader.add_constructor("!override", _override)


def test_local_override_builds_every_peer_and_keeps_the_platform() -> None:
    from serving.config import Backend, load_serve_config

    local = yaml.load((DOCKER / "compose.local.yaml").read_text(), Loader=_ComposeLoader)
    services = _compose()["services"]
    assert set(local["services"]) <= set(services)
    for name, service in local["services"].items():
        image = str(service.get("image", ""))
        if image:
            assert image.startswith("localhost/radgate/"), f"{name}: {image}"
            stem = image.split("/")[-1].split(":")[0]
            assert (DOCKER / "peers" / f"{stem}.Dockerfile").is_file() or (
                DOCKER / f"{stem}.Dockerfile"
            ).is_file()
    # No GPU service in the local stack; the serving config there forwards in-process.
    assert local["services"]["triton"]["profiles"] == ["gpu"] and local["services"]["ray-worker"][
        "profiles"
    ] == ["gpu"]
    serve = load_serve_config(DOCKER / "config" / "serve.local.yaml")
    assert all(m.backend == Backend.INPROCESS for m in serve.models) and serve.pacs is not None
    # Published ports stay on loopback.
    for name, service in local["services"].items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_radgate_services_that_allow_it_run_on_a_read_only_root() -> None:
    """The gateway, the UI and the admin console write only their volume and /tmp: a process
    broken into there cannot change the code or configuration it runs."""
    services = _compose()["services"]
    for name in ("gateway", "ui", "admin"):
        service = services[name]
        assert service.get("read_only") is True, name
        assert "/tmp" in service.get("tmpfs", []), name
