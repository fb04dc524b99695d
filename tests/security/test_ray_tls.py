"""Attack: a peer on the network talks to Ray's own ports (GCS, raylets, the Ray Client server),
which spoke plaintext gRPC: it could read tasks and objects (de-identified training data, model
weights) or join the cluster.

A real ``ray start --head`` on 127.0.0.1 runs with the Ray TLS settings docker/compose.yaml gives
the training cluster (``RAY_USE_TLS``, ``RAY_TLS_SERVER_CERT``/``_KEY``, ``RAY_TLS_CA_CERT``, each
a file compose mounts, mapped here to this test's files) and the certificate made by
docker/make-secrets.sh's own line (the Ray nodes' addresses: here this machine's network). Then:

- a plaintext gRPC client gets no channel to the GCS, nor does a TLS client holding a certificate
  of another CA (mutual TLS, verified against the stack's CA);
- a Ray driver without the certificates cannot connect (``ray.init`` never gets through);
- a driver with compose's settings connects and runs a task.

On the compose file before (no ``RAY_USE_TLS``) the head spoke plaintext and the plaintext
client's channel was ready at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml

from governance.tls import issue_service_certificates, make_dev_certificates
from tests.integration.conftest import load_script

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
TLS_VARIABLES = ("RAY_USE_TLS", "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
DRIVER = (
    "import ray; ray.init(address={address!r}); print('answer', ray.get(ray.remote(lambda: 41 + 1).remote()))"
)


def _node_ip() -> str:
    from ray._private.services import get_node_ip_address

    return str(get_node_ip_address())


def _secrets(tmp_path: Path) -> Path:
    """docker/secrets as make-secrets.sh makes it for Ray: the dev CA, then its own line issuing
    the Ray certificate, for the network of this machine's address (compose: its subnet)."""
    secrets = tmp_path / "secrets"
    make_dev_certificates(secrets / "tls")
    script = (DOCKER / "make-secrets.sh").read_text()
    (line,) = [ln for ln in script.splitlines() if "RAY_NODE_NETWORK" in ln and not ln.startswith("#")]
    radgate = Path(sys.executable).with_name("radgate")
    env = {**os.environ, "RAY_NODE_NETWORK": f"{_node_ip()}/24"}
    subprocess.run(["bash", "-euc", f"radgate={radgate}\n{line}"], cwd=secrets, check=True, env=env)
    return secrets


def _compose_ray_tls(secrets: Path) -> dict[str, str]:
    """The Ray head's TLS settings in docker/compose.yaml, each mounted file mapped to this test's."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    head = compose["services"]["ray-head"]
    files = {name: spec["file"] for name, spec in compose["secrets"].items()}
    mounted = {s["target"]: s["source"] for s in head["secrets"] if isinstance(s, dict)}
    env = {name: str(head["environment"][name]) for name in TLS_VARIABLES}
    for name in TLS_VARIABLES[1:]:
        env[name] = str(secrets.parent / files[mounted[env[name]]].removeprefix("./"))
    return env


def _channel_ready(address: str, credentials: grpc.ChannelCredentials | None) -> bool:
    channel = (
        grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    )
    try:
        grpc.channel_ready_future(channel).result(timeout=5)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def _credentials(certificate: Path, key: Path, ca: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=certificate.read_bytes(),
    )


def test_rays_ports_speak_mutual_tls_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("ray is not installed in this environment")
    secrets = _secrets(tmp_path)
    tls = _compose_ray_tls(secrets)
    assert tls["RAY_USE_TLS"] == "1"
    for name, value in tls.items():
        monkeypatch.setenv(name, value)
    head = load_script("scripts/ci/ray_head.py", "radgate_ci_ray_head").RayHead(num_cpus=1).start()
    try:
        certificate, key, ca = (Path(tls[n]) for n in TLS_VARIABLES[1:])
        # The GCS: plaintext and a foreign CA's certificate get no channel; the cluster's does.
        assert not _channel_ready(head.address, None)
        foreign = make_dev_certificates(tmp_path / "foreign")
        ((foreign_cert, foreign_key),) = issue_service_certificates(tmp_path / "foreign", ("ray",)).values()
        assert not _channel_ready(
            head.address, _credentials(foreign_cert, foreign_key, foreign.ca_certificate)
        )
        assert _channel_ready(head.address, _credentials(certificate, key, ca))

        plain_env = {k: v for k, v in os.environ.items() if k not in TLS_VARIABLES}
        plain_env["RAY_AUTH_MODE"] = "disabled"
        code = DRIVER.format(address=head.address)
        try:
            plain = subprocess.run(
                [sys.executable, "-c", code], env=plain_env, capture_output=True, text=True, timeout=15
            )
            assert plain.returncode != 0 and "answer 42" not in plain.stdout
        except subprocess.TimeoutExpired:
            pass  # it never got through
        driver = subprocess.run(
            [sys.executable, "-c", code],
            env={**plain_env, **tls},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert "answer 42" in driver.stdout, driver.stdout[-2000:] + driver.stderr[-3000:]
    finally:
        head.stop()
