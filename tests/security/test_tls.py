"""TLS where it is required, with the certificates of ``radgate certs dev`` and real peers:

- the gateway's SCP with DICOM TLS (mutual): a plaintext association, and a TLS one without a
  client certificate, are refused; a pynetdicom peer with its certificate echoes and stores;
- the STOW-RS listener over HTTPS: plaintext HTTP gets no answer, HTTPS stores, with HSTS;
- Orthanc (DICOM TLS, DCMTK's BCP 195 profile) sends a study to the gateway and receives one
  from it (``radgate push``'s code path), both over TLS with certificates on both sides.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from governance.catalog import Instance, open_catalog
from governance.tls import DevCertificates, client_context
from tests.integration.conftest import gateway_config, orthanc_ci, write_ct_series
from tests.processes import stop_process

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    """The development CA and certificates, made by the CLI command itself."""
    import json

    directory = tmp_path_factory.mktemp("tls")
    radgate = Path(sys.executable).with_name("radgate")
    done = subprocess.run(
        [str(radgate), "certs", "dev", "--dir", str(directory)], capture_output=True, text=True, check=True
    )
    paths = {k: Path(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    assert (paths["server_key"].stat().st_mode & 0o777) == 0o600
    return DevCertificates(**paths)


def _server_tls(certs: DevCertificates, mutual: bool = True) -> dict[str, Any]:
    tls: dict[str, Any] = {
        "certificate": str(certs.server_certificate),
        "private_key": str(certs.server_key),
    }
    if mutual:
        tls.update(ca_file=str(certs.ca_certificate), require_client_certificate=True)
    return tls


def _echo_and_store(
    port: int, files: list[Path], tls_args: tuple[ssl.SSLContext, str] | None
) -> tuple[int, list[int]]:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADGATE", tls_args=tls_args)
    if not assoc.is_established:
        return -1, []
    try:
        echo = int(assoc.send_c_echo().Status)
        return echo, [int(assoc.send_c_store(dcmread(path)).Status) for path in files]
    finally:
        assoc.release()


def _stored() -> int:
    with open_catalog().session() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def test_scp_requires_tls_and_a_client_certificate(
    start_gateway: Any, certs: DevCertificates, tmp_path: Path
) -> None:
    config = gateway_config(http={"enabled": False})
    config["dicom"].update(tls=_server_tls(certs), acse_timeout=5)
    gateway = start_gateway(config)
    assert gateway.ready["dicom_tls"] is True
    files = write_ct_series(tmp_path / "ct", 2)

    assert _echo_and_store(gateway.dicom_port, files, None) == (-1, [])  # plaintext
    anonymous = client_context(certs.ca_certificate)  # TLS, but no client certificate
    assert _echo_and_store(gateway.dicom_port, files, (anonymous, "localhost")) == (-1, [])
    assert _stored() == 0

    mutual = client_context(certs.ca_certificate, certs.client_certificate, certs.client_key)
    assert _echo_and_store(gateway.dicom_port, files, (mutual, "localhost")) == (0, [0, 0])
    assert _stored() == 2


def test_stow_rs_over_https_only(start_gateway: Any, certs: DevCertificates, tmp_path: Path) -> None:
    from governance.testing import cast_token
    from imaging.gateway.multipart import build_related

    config = gateway_config()
    config["http"]["tls"] = _server_tls(certs, mutual=False)
    gateway = start_gateway(config)
    body, content_type = build_related([p.read_bytes() for p in write_ct_series(tmp_path / "ct", 1)])
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {cast_token('pacs-client')}"}
    plain = f"http://127.0.0.1:{gateway.http_port}/dicomweb/studies"
    with pytest.raises(httpx.HTTPError):  # a TLS listener does not speak plaintext HTTP
        httpx.post(plain, content=body, headers=headers, timeout=10)
    secure = f"https://localhost:{gateway.http_port}/dicomweb/studies"
    reply = httpx.post(secure, content=body, headers=headers, timeout=60, verify=str(certs.ca_certificate))
    assert reply.status_code == 200
    assert reply.headers["strict-transport-security"].startswith("max-age=")
    assert _stored() == 1


@pytest.fixture
def tls_orthanc(tmp_path: Path, certs: DevCertificates) -> Any:
    """An Orthanc that speaks only DICOM TLS and requires a certificate from the dev CA; it
    knows RADGATE (port set once the gateway listens) as a TLS peer."""
    import shutil

    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed (scripts/ci/install-apt.sh)")
    return orthanc_ci.OrthancServer(
        tmp_path / "orthanc",
        extra_config={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(certs.server_certificate),
            "DicomTlsPrivateKey": str(certs.server_key),
            "DicomTlsTrustedCertificates": str(certs.ca_certificate),
            "DicomTlsRemoteCertificateRequired": True,
        },
    )


def test_orthanc_exchanges_studies_with_the_gateway_over_tls(
    start_gateway: Any, certs: DevCertificates, tls_orthanc: Any, tmp_path: Path
) -> None:
    from governance.tls import ClientTls
    from imaging.gateway.config import PacsPeer
    from imaging.gateway.push import push_files

    config = gateway_config(http={"enabled": False})
    config["dicom"].update(tls=_server_tls(certs))
    gateway = start_gateway(config)
    tls_orthanc.extra_config["DicomModalities"] = {
        "radgate": {"AET": "RADGATE", "Host": "127.0.0.1", "Port": gateway.dicom_port, "UseDicomTls": True},
    }
    tls_orthanc.start()
    try:
        # Orthanc -> gateway: Orthanc's SCU over TLS, with its certificate.
        for path in write_ct_series(tmp_path / "to-gateway", 3):
            tls_orthanc.upload(path.read_bytes())
        study = tls_orthanc.rest("GET", "/studies")[0]
        tls_orthanc.rest("POST", "/modalities/radgate/store", {"Resources": [study], "Synchronous": True})
        assert _stored() == 3

        # gateway -> Orthanc: the push path, with the client certificate; plaintext is refused.
        files = write_ct_series(tmp_path / "to-orthanc", 2)
        peer = PacsPeer(name="orthanc", ae_title=tls_orthanc.aet, port=tls_orthanc.dicom_port)
        with pytest.raises(Exception, match="refused the association"):
            push_files(peer, files, calling_ae="RADGATE", timeout=10)
        secured = peer.model_copy(
            update={
                "tls": ClientTls(
                    ca_file=certs.ca_certificate,
                    certificate=certs.client_certificate,
                    private_key=certs.client_key,
                    server_name="localhost",
                )
            }
        )
        report = push_files(secured, files, calling_ae="RADGATE", timeout=30)
        assert report.sent == 2 and not report.failed
        assert len(tls_orthanc.rest("GET", "/instances")) == 3 + 2
    finally:
        tls_orthanc.stop()


def test_inference_ae_listens_with_dicom_tls_only(certs: DevCertificates) -> None:
    """``radgate serve-ae --tls-cert/--tls-key/--tls-ca``: pynetdicom's server with our BCP 195
    context; a plaintext C-ECHO is refused, a mutual-TLS one answered (no serving API is needed
    for an echo)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from governance.tls import server_context
    from serving.inference_ae import InferenceAE
    from serving.net import free_port

    port = free_port("127.0.0.1")
    node = InferenceAE(
        serve_url="http://127.0.0.1:9",  # nothing listens: only C-ECHO is exercised
        model="any",
        token="unused",
        port=port,
        series_mode=False,
        tls=server_context(
            certs.server_certificate, certs.server_key, certs.ca_certificate, require_client_certificate=True
        ),
    ).start()
    try:
        ae = AE(ae_title="STORESCU")
        ae.acse_timeout = ae.network_timeout = 10
        ae.add_requested_context(Verification)
        plain = ae.associate("127.0.0.1", port, ae_title="RADGATE-AI")
        assert not plain.is_established
        mutual = client_context(certs.ca_certificate, certs.client_certificate, certs.client_key)
        assoc = ae.associate("127.0.0.1", port, ae_title="RADGATE-AI", tls_args=(mutual, "localhost"))
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0
        assoc.release()
    finally:
        node.stop()


def test_catalog_reaches_postgresql_over_verified_tls_only(
    certs: DevCertificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL that accepts TCP only with TLS (hostssl): the catalog URL's libpq options
    (sslmode=verify-full, sslrootcert) give a verified TLS connection; sslmode=disable is refused."""
    import sqlalchemy

    from governance.settings import get_settings
    from tests.integration.conftest import load_script

    pg_ci = load_script("scripts/ci/postgres.py", "radgate_ci_postgres")
    if pg_ci.find_bindir() is None:
        pytest.skip("PostgreSQL is not installed (scripts/ci/install-postgres.sh)")
    cluster = pg_ci.PostgresCluster(pg_ci.scratch_dir(), tls=(certs.server_certificate, certs.server_key))
    cluster.start()
    try:
        url = cluster.create_database("radgate_tls")
        plain = sqlalchemy.create_engine(url + "?sslmode=disable")
        with pytest.raises(sqlalchemy.exc.OperationalError, match="no encryption"):
            plain.connect()
        plain.dispose()
        secured = f"{url}?sslmode=verify-full&sslrootcert={certs.ca_certificate}"
        monkeypatch.setenv("RADGATE_CATALOG_URL", secured)
        get_settings.cache_clear()
        catalog = open_catalog()
        with catalog.engine.connect() as connection:
            in_tls = connection.execute(
                sqlalchemy.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
            assert in_tls.scalar() is True
        assert _stored() == 0  # the catalog's tables exist and answer over TLS
        catalog.engine.dispose()
    finally:
        get_settings.cache_clear()
        cluster.stop()


def test_serving_api_over_https_only(certs: DevCertificates, tmp_path: Path) -> None:
    """``tls:`` in the serving config: Ray Serve's proxy answers HTTPS only; an approved model
    predicts over it, with HSTS; plaintext HTTP on the same port gets no answer."""
    import os

    import ray
    from ray import serve

    from governance.testing import create_cast
    from imaging.demo_data import write_demo_studies
    from serving.app import run, start_ray
    from serving.config import ServeConfig
    from serving.net import free_port
    from serving.testing import approve_and_promote, register_model

    cast = create_cast()
    version = register_model("tls-model")
    approve_and_promote("tls-model", version, cast)
    port = free_port()
    config = ServeConfig.model_validate(
        {
            "port": port,
            "ingress_num_cpus": 0.5,
            "tls": _server_tls(certs, mutual=False),
            "models": [{"name": "tls-model", "num_cpus": 0.5}],
        }
    )
    start_ray(config, num_cpus=2, temp_dir=f"/tmp/rg-ray-tls-{os.getpid()}")
    try:
        run(config)
        image = write_demo_studies(tmp_path / "demo", patients=1, images_per_patient=1, size=64).files[0]
        headers = {"Authorization": f"Bearer {cast.tokens['pacs']}", "Content-Type": "application/dicom"}
        url = f"localhost:{port}/v1/models/tls-model/predict"
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"http://{url}", content=image.read_bytes(), headers=headers, timeout=30)
        reply = httpx.post(
            f"https://{url}",
            content=image.read_bytes(),
            headers=headers,
            timeout=120,
            verify=str(certs.ca_certificate),
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["strict-transport-security"].startswith("max-age=")
    finally:
        serve.shutdown()
        ray.shutdown()


def test_reviewer_ui_over_https_only_with_its_own_keys(
    certs: DevCertificates, as_role: Any, tmp_path: Path
) -> None:
    """``radgate ui --tls-cert --tls-key`` (how compose runs it): HTTPS only, with HSTS and a
    Secure session cookie, in a process that holds only the UI's keys (its session key and the
    audit writer's pair; no pseudonym key in its environment or keys directory). Signing in and
    reading the verified audit trail need nothing else, and no other key is created."""
    import os
    import shutil
    import time

    from governance.keyring import UI_SESSION, keys_dir, load_audit_signer, load_store_key
    from governance.testing import cast_token
    from serving.net import free_port

    as_role("ml-engineer")  # the UI service's own user
    auditor = cast_token("auditor")
    load_store_key(UI_SESSION)
    load_audit_signer()
    ui_keys = tmp_path / "ui-keys"
    ui_keys.mkdir()
    held = ("ui-session.key", "audit-signing.key", "audit-signing.pub")
    for name in held:
        shutil.copy2(keys_dir() / name, ui_keys / name)
    env = {k: v for k, v in os.environ.items() if k != "RADGATE_PROJECT_KEY"}
    env["RADGATE_KEY_FILE"] = str(ui_keys / "project.key")  # the directory; no project.key in it

    port = free_port("127.0.0.1")
    radgate = Path(sys.executable).with_name("radgate")
    command = [str(radgate), "ui", "--no-demo", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--tls-cert", str(certs.server_certificate), "--tls-key", str(certs.server_key)]
    log = (tmp_path / "ui.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"https://localhost:{port}/ui"
    try:
        with httpx.Client(verify=str(certs.ca_certificate), timeout=10) as client:
            deadline = time.monotonic() + 120
            while True:  # until it listens (start-up time varies with the machine's load)
                assert process.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
                try:
                    page = client.get(f"{url}/login")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            assert page.status_code == 200
            assert page.headers["strict-transport-security"].startswith("max-age=")
            with pytest.raises(httpx.HTTPError):  # a TLS listener does not speak plaintext HTTP
                httpx.get(f"http://127.0.0.1:{port}/ui/login", timeout=10)

            signed_in = client.post(f"{url}/login", data={"token": auditor}, follow_redirects=False)
            assert signed_in.status_code == 303
            assert "secure" in signed_in.headers["set-cookie"].lower()
            trail = client.get(f"{url}/audit")
            assert trail.status_code == 200 and "ui.login" in trail.text
            assert 'data-testid="chain" class="ok"' in trail.text  # verified with audit-signing.pub
    finally:
        stop_process(process)
        log.close()
    assert sorted(p.name for p in ui_keys.iterdir()) == sorted(held)


def test_mlflow_tracking_server_over_https_only(
    certs: DevCertificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tracking server as compose runs it (``mlflow server --uvicorn-opts "--ssl-certfile ..
    --ssl-keyfile .."``): RadGate's registry client reaches it over verified HTTPS with MLflow's
    ``MLFLOW_TRACKING_SERVER_CERT_PATH``; plaintext gets no answer, and without the CA the client
    refuses the server."""
    import os
    import signal
    import time

    from governance.approvals.registry import registry_client
    from serving.net import free_port

    port = free_port("127.0.0.1")
    tls = f"--ssl-certfile {certs.server_certificate} --ssl-keyfile {certs.server_key}"
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--uvicorn-opts", tls]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    log = (tmp_path / "mlflow.log").open("wb")
    server = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,  # its uvicorn workers are stopped with it
    )
    url = f"https://localhost:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # until it listens (start-up time varies with the machine's load)
            assert server.poll() is None, (tmp_path / "mlflow.log").read_text()[-2000:]
            try:
                httpx.get(f"{url}/health", verify=str(certs.ca_certificate), timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            registry_client(url).search_experiments()
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(certs.ca_certificate))
        assert [e.name for e in registry_client(url).search_experiments()] == ["Default"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:  # uvicorn drains slowly: the test is over, stop it
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
        log.close()
