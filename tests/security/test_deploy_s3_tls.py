"""Attack: read or replace the stored instances and models on the wire between RadGate and the S3
server, or stand in for it, inside the deployment's network. Before, docker/compose.yaml's MinIO
(and the ``local`` stack's S3 peer) spoke plain HTTP and every client's endpoint was
``http://minio:9000``: the objects (de-identified instances, model artifacts) and the signed
requests crossed the network in clear, and any host answering as ``minio`` was the store.

Here the ``local`` stack's S3 peer runs as compose.local.yaml starts it (moto's server with the
certificate make-secrets.sh issues for ``minio``), and RadGate's content store connects with
compose's own S3 settings (``AWS_ENDPOINT_URL``, ``AWS_CA_BUNDLE``): objects go over verified
HTTPS; plaintext gets no S3 answer; a client that does not trust the stack's CA refuses the server.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from governance.tls import issue_service_certificates, make_dev_certificates
from tests.processes import stop_process

pytestmark = pytest.mark.integration

DOCKER = Path(__file__).resolve().parents[2] / "docker"
BUCKET = "radgate"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """compose.local.yaml's S3 peer command, its /run/secrets files made here, on 127.0.0.1."""
    import moto.server  # noqa: F401 (moto comes with the [test] extra: missing is a failure)

    work = tmp_path_factory.mktemp("s3-tls")
    tls = work / "tls"
    make_dev_certificates(tls)
    issue_service_certificates(tls, ("minio",))  # DNS minio, localhost, 127.0.0.1
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    files = {name: tls / Path(spec["file"]).name for name, spec in compose["secrets"].items()}
    local = yaml.load((DOCKER / "compose.local.yaml").read_text(), Loader=_loader())
    argv = [str(arg) for arg in local["services"]["minio"]["command"]]
    for secret in local["services"]["minio"].get("secrets") or []:
        argv = [arg.replace(f"/run/secrets/{secret}", str(files[secret])) for arg in argv]
    port = _free_port()
    assert argv[0] == "moto_server"
    argv = [sys.executable, "-m", "moto.server", *argv[1:]]
    argv[argv.index("-H") + 1], argv[argv.index("-p") + 1] = "127.0.0.1", str(port)
    log = (work / "moto.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _refused(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the S3 peer did not start: {(work / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield {"port": port, "ca": tls / "ca.pem", "env": compose["x-radgate-env"]}
    finally:
        stop_process(process, timeout=15)
        log.close()


def _loader() -> Any:
    from tests.unit.test_deploy_static import _ComposeLoader

    return _ComposeLoader


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _compose_s3_env(server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    """compose's S3 settings, the endpoint's host made local (the certificate names localhost
    too) and the CA's container path this test's file."""
    endpoint = str(server["env"]["AWS_ENDPOINT_URL"]).replace("minio:9000", f"localhost:{server['port']}")
    ca = str(server["env"]["AWS_CA_BUNDLE"]) if "AWS_CA_BUNDLE" in server["env"] else None
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    if ca is not None:
        assert ca.startswith("/run/radgate-tls/")
        monkeypatch.setenv("AWS_CA_BUNDLE", str(server["ca"]))
    for key, value in {"AWS_ACCESS_KEY_ID": "radgate-admin", "AWS_SECRET_ACCESS_KEY": "secret",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    return endpoint


@pytest.fixture
def fresh_fs() -> Iterator[None]:
    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()  # filesystems are cached with the endpoint they were made for
    yield
    S3FileSystem.clear_instance_cache()


def test_radgate_stores_objects_over_verified_https(
    server: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fresh_fs: None
) -> None:
    import boto3

    from imaging.store import ContentStore

    endpoint = _compose_s3_env(server, monkeypatch)
    assert endpoint.startswith("https://")
    boto3.client("s3").create_bucket(Bucket=BUCKET)  # the buckets one-shot's job
    store = ContentStore(f"s3://{BUCKET}/store")
    data = b"DICM" * 64
    key = store.put(data)
    assert key == hashlib.sha256(data).hexdigest() and store.get(key) == data


def test_plaintext_gets_no_s3_answer(server: dict[str, Any]) -> None:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{server['port']}/{BUCKET}", timeout=5)
    except urllib.error.HTTPError as exc:  # an S3 answer (an error status is one too)
        pytest.fail(f"plaintext HTTP got an S3 answer: {exc.code}")
    except OSError:  # no HTTP answer: the TLS server drops it
        return
    pytest.fail("plaintext HTTP got an S3 answer")


def test_a_client_that_does_not_trust_the_stacks_ca_refuses_the_server(
    server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from botocore.exceptions import SSLError

    _compose_s3_env(server, monkeypatch)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # the system's CAs only
    with pytest.raises(SSLError):
        boto3.client("s3").list_buckets()
