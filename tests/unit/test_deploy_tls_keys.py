"""TLS and keys in the deployment files (docker/compose.yaml, its `local` override, the configs
they mount, docker/k8s/*.yaml), read as the engines read them (no engine or cluster runs here):

- every RadGate listener runs with TLS on: the gateway's DICOM SCP (mutual TLS) and STOW-RS,
  serving's API, the reviewer UI; each names a certificate and key that its service mounts, and
  its health check speaks HTTPS against the mounted CA; Orthanc speaks DICOM TLS both ways;
- each service mounts exactly the keys its code reads (``KEYS``, below, says which code), the
  pseudonym key only in the de-identifier, the broker's private key and the CA's key nowhere, and
  no service another service's TLS key.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy_static import _ComposeLoader  # compose's !override / !reset tags

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
KEYS_DIR = "/run/radgate-keys/"
TLS_DIR = "/run/radgate-tls/"

# The key files each RadGate service reads (governance.keyring; docs/SECURITY.md, "Keys per service"):
# - every service writes audit entries (governance.audit.record) and the gate or the audit page
#   verifies the chain (audit-signing.pub, and audit-writers.json for the entries of restricted
#   writers). The governance audit writer (audit-signing.key: governance entries, head anchors) is
#   the UI and the admin console; gateway, serving and training sign only their own entries, each
#   with a writer key of its own (audit-writer.key; governance.keyring.SERVICE_WRITERS);
# - gateway: pseudonyms (imaging.deid via governance.keys.load_project_key: project.key) and
#   originals sealed to the honest broker (re-id map, quarantine: broker.pub); its receive spool
#   (imaging.gateway.spool: gateway-spool.key);
# - serving: its sealed records (serving.monitoring.sealing.serving_key: serving-store.key); the
#   pseudonym key only if held (serving.monitoring.live._pseudonym_key_if_held): not mounted;
# - ui: sessions and CSRF tokens (serving.ui.sessions / security: ui-session.key);
# - serving and ui ask the gate, which keeps MACed records of artifact hashes
#   (governance.approvals.digests: artifact-digest.key; optional, without it the gate reads the files);
# - the training cluster: training evidence (its writer key), the pseudonym key's public id;
# - admin: the admin console (the CLI of approvals, promotions, users, keys): audit only, and
#   the gate's hash records.
AUDIT = {"audit-signing.key", "audit-signing.pub", "audit-writers.json"}
WRITER = {"audit-writer.key", "audit-signing.pub", "audit-writers.json"}  # a restricted writer
KEYS = {
    "gateway": {"project.key", "broker.pub", "gateway-spool.key", *WRITER},
    "serving": {"serving-store.key", "artifact-digest.key", *WRITER},
    "ui": {"ui-session.key", "artifact-digest.key", *AUDIT},
    "admin": {"artifact-digest.key", *AUDIT},
    "ray-head": {"project.key.id", *WRITER},
    "ray-worker": {"project.key.id", *WRITER},
    "trainer": {"project.key.id", *WRITER},
}
# Each restricted writer's key (audit-writer-NAME.key) by compose service; the governance writers
# (ui, admin) are the only services that mount audit-signing.key.
WRITERS = {"gateway": "gateway", "serving": "serving", "ray-head": "training", "ray-worker": "training",
           "trainer": "training"}  # fmt: skip
GOVERNANCE_WRITERS = {"ui", "admin"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _targets(service: dict[str, Any]) -> dict[str, str]:
    """Mounted secret files of a compose service: target path -> secret name."""
    out = {}
    for secret in service.get("secrets", []):
        if isinstance(secret, dict):
            out[secret.get("target", f"/run/secrets/{secret['source']}")] = secret["source"]
        else:
            out[f"/run/secrets/{secret}"] = secret
    return out


def _files(compose: dict[str, Any]) -> dict[str, str]:
    """Secret name -> file under docker/."""
    return {name: spec["file"] for name, spec in compose["secrets"].items()}


# --- compose: keys -------------------------------------------------------------------------------


def test_each_compose_service_mounts_exactly_the_keys_its_code_reads() -> None:
    compose = _compose()
    files = _files(compose)
    for name, service in compose["services"].items():
        targets = _targets(service)
        held = {Path(t).name for t in targets if t.startswith(KEYS_DIR)}
        assert held == KEYS.get(name, set()), name
        # Each key file is the secret of that name (not another key mounted under its name).
        renamed = {
            "project.key": "radgate_project_key",
            "project.key.id": "radgate_project_key_id",
            "audit-writer.key": f"audit-writer-{WRITERS.get(name)}.key",
        }
        for target, source in targets.items():
            if target.startswith(KEYS_DIR):
                stem = Path(target).name
                assert Path(files[source]).name == renamed.get(stem, stem), f"{name}: {target} <- {source}"
        # Keys only as files: no key in the environment (RADGATE_PROJECT_KEY{,_FILE} included).
        env = service.get("environment") or {}
        assert not [k for k in env if k.startswith("RADGATE_PROJECT_KEY")], name
        if held:
            assert env.get("RADGATE_KEY_FILE", "").startswith(KEYS_DIR), name
    # The pseudonym key is the de-identifier's alone; the broker's private key and the CA's key
    # are files of no secret at all.
    users = [n for n, s in compose["services"].items() if "radgate_project_key" in _targets(s).values()]
    assert users == ["gateway"]
    signers = {n for n, s in compose["services"].items() if "audit_signing_key" in _targets(s).values()}
    assert signers == GOVERNANCE_WRITERS
    assert not [f for f in files.values() if f.endswith(("broker.key", "ca-key.pem"))]


def test_compose_anchor_env_carries_no_key() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    anchor = yaml.safe_load(text)["x-radgate-env"]
    assert "RADGATE_PROJECT_KEY_FILE" not in anchor and anchor["RADGATE_KEY_FILE"].startswith(KEYS_DIR)


# --- compose: TLS ----------------------------------------------------------------------------------


def _tls_files(service: dict[str, Any], files: dict[str, str]) -> dict[str, str]:
    """TLS target path -> file under docker/secrets, of one compose service."""
    return {t: files[s] for t, s in _targets(service).items() if t.startswith(TLS_DIR)}


def _own_tls(name: str, service: dict[str, Any], files: dict[str, str]) -> None:
    """The service mounts the CA, its own certificate and key, and no other private key."""
    mounted = _tls_files(service, files)
    assert mounted.get(f"{TLS_DIR}ca.pem") == "./secrets/tls/ca.pem", name
    assert mounted.get(f"{TLS_DIR}{name}.pem") == f"./secrets/tls/{name}.pem", name
    assert mounted.get(f"{TLS_DIR}{name}-key.pem") == f"./secrets/tls/{name}-key.pem", name
    keys = {f for f in mounted.values() if f.endswith("-key.pem")}
    # (+ a bundle of its own for HTTPS; its own Ray's key)
    own = {f"./secrets/tls/{name}-{kind}key.pem" for kind in ("", "https-", "ray-")}
    assert f"./secrets/tls/{name}-key.pem" in keys and keys <= own, f"{name} holds {keys}"


def _mounted(path: Path | str | None, service: dict[str, Any]) -> bool:
    return path is not None and str(path) in _targets(service)


def test_gateway_runs_dicom_tls_and_https_with_its_own_certificate() -> None:
    from imaging.gateway.config import load_config

    compose = _compose()
    gateway = compose["services"]["gateway"]
    _own_tls("gateway", gateway, _files(compose))
    # The config the image reads (compose mounts docker/config/gateway.yaml there).
    assert "./config/gateway.yaml:/etc/radgate/gateway.yaml:ro" in gateway["volumes"]
    config = load_config(DOCKER / "config" / "gateway.yaml")
    dicom, http = config.dicom.tls, config.http.tls
    assert dicom is not None and dicom.require_client_certificate, "DICOM needs mutual TLS"
    assert http is not None and config.http.enabled
    for tls in (dicom, http):
        assert _mounted(tls.certificate, gateway) and _mounted(tls.private_key, gateway)
    assert _mounted(dicom.ca_file, gateway)
    for pacs in config.pacs:  # pushes and pulls to the PACS over DICOM TLS, mutual
        assert pacs.tls is not None, pacs.name
        assert _mounted(pacs.tls.ca_file, gateway) and _mounted(pacs.tls.certificate, gateway)
        assert _mounted(pacs.tls.private_key, gateway)


def _https_service(name: str, port: int) -> dict[str, Any]:
    """A compose service with its own TLS files and a health check over HTTPS on ``port``."""
    compose = _compose()
    service: dict[str, Any] = compose["services"][name]
    _own_tls(name, service, _files(compose))
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and "https" in test, test
    url, ca = test[-2], test[-1]
    assert url.startswith(f"https://localhost:{port}/") and _mounted(ca, service), test
    return service


def test_serving_answers_https_only_with_its_own_certificate() -> None:
    from serving.config import load_serve_config

    serving = _https_service("serving", 8000)
    # The image's serve.yaml (docker/serving.Dockerfile copies docker/config/serve.yaml) and the
    # local stack's (mounted over it).
    assert "COPY docker/config/serve.yaml /home/ray/serve.yaml" in (DOCKER / "serving.Dockerfile").read_text()
    for config_file in ("serve.yaml", "serve.local.yaml"):
        config = load_serve_config(DOCKER / "config" / config_file)
        assert config.tls is not None and not config.wants_direct_ingress, config_file
        assert _mounted(config.tls.certificate, serving) and _mounted(config.tls.private_key, serving)
        if config.pacs is not None:  # results pushed to Orthanc over DICOM TLS
            assert config.pacs.tls is not None and _mounted(config.pacs.tls.private_key, serving)
    dockerfile = (DOCKER / "serving.Dockerfile").read_text()
    assert '"https", "https://localhost:8000/-/healthz"' in dockerfile  # the image's own check


def test_reviewer_ui_answers_https_only_with_its_own_certificate() -> None:
    from typer.main import get_command

    from serving.ui.cli import ui

    service = _https_service("ui", 8080)
    argv = service["command"]
    assert argv[0] == "ui"
    import typer

    app = typer.Typer()
    app.command()(ui)
    context = get_command(app).make_context("ui", list(argv[1:]))  # the CLI parses these arguments
    assert _mounted(context.params["tls_cert"], service) and _mounted(context.params["tls_key"], service)


def test_orthanc_speaks_dicom_tls_with_its_own_certificate() -> None:
    compose = _compose()
    orthanc = compose["services"]["orthanc"]
    _own_tls("orthanc", orthanc, _files(compose))
    env = orthanc["environment"]
    assert env["ORTHANC__DICOM_TLS_ENABLED"] == "true"
    assert env["ORTHANC__DICOM_TLS_REMOTE_CERTIFICATE_REQUIRED"] == "true"
    for key in ("CERTIFICATE", "PRIVATE_KEY", "TRUSTED_CERTIFICATES"):
        assert _mounted(env[f"ORTHANC__DICOM_TLS_{key}"], orthanc), key
    modalities = json.loads(env["ORTHANC__DICOM_MODALITIES"])
    assert all(m["UseDicomTls"] for m in modalities.values())
    # The `local` override's Orthanc (Debian's, configured by docker/peers/orthanc.json).
    local = (DOCKER / "peers" / "orthanc.json").read_text()
    config = json.loads(local)
    assert config["DicomTlsEnabled"] and config["DicomTlsRemoteCertificateRequired"]
    assert all(m["UseDicomTls"] for m in config["DicomModalities"].values())
    override = yaml.load((DOCKER / "compose.local.yaml").read_text(), Loader=_ComposeLoader)
    local_targets = _targets({"secrets": override["services"]["orthanc"]["secrets"]})
    for key in ("DicomTlsCertificate", "DicomTlsPrivateKey", "DicomTlsTrustedCertificates"):
        assert config[key] in local_targets, key


def test_orthanc_http_and_dicomweb_are_https_only_and_radgates_client_verifies_them() -> None:
    """Orthanc's REST/DICOMweb port: HTTPS only (TLS 1.2+) with its own certificate and key (one PEM
    file, made by make-secrets.sh), in compose (official image) and the `local` stack (Debian's, with
    the civetweb shim); RadGate's DICOMweb client (the gateway's pulls) uses https:// and trusts the
    mounted CA. (tests/security/test_orthanc_https.py runs the real Orthanc with these settings.)"""
    from imaging.gateway.config import load_config

    compose = _compose()
    files = _files(compose)
    orthanc = compose["services"]["orthanc"]
    env = orthanc["environment"]
    assert env["ORTHANC__SSL_ENABLED"] == "true" and env["ORTHANC__DICOM_WEB__SSL"] == "true"
    assert env["ORTHANC__SSL_MINIMUM_PROTOCOL_VERSION"] == "4"  # TLS 1.2 or later
    bundle = env["ORTHANC__SSL_CERTIFICATE"]
    assert files[_targets(orthanc)[bundle]] == "./secrets/tls/orthanc-https-key.pem"
    assert "--http_scheme=https" in orthanc["healthcheck"]["test"]
    script = (DOCKER / "make-secrets.sh").read_text()
    assert "cat tls/orthanc.pem tls/orthanc-key.pem > tls/orthanc-https-key.pem" in script
    # The `local` stack's Orthanc.
    config = json.loads((DOCKER / "peers" / "orthanc.json").read_text())
    assert config["SslEnabled"] is True and config["SslMinimumProtocolVersion"] == 4
    assert config["DicomWeb"]["Ssl"] is True
    override = yaml.load((DOCKER / "compose.local.yaml").read_text(), Loader=_ComposeLoader)
    local_targets = _targets({"secrets": override["services"]["orthanc"]["secrets"]})
    assert files[local_targets[config["SslCertificate"]]] == "./secrets/tls/orthanc-https-key.pem"
    dockerfile = (DOCKER / "peers" / "orthanc.Dockerfile").read_text()
    assert (
        "orthanc-sslshim.c" in dockerfile
        and "ENV LD_LIBRARY_PATH=/usr/local/lib/radgate-sslshim" in dockerfile
    )
    # RadGate's clients of Orthanc's HTTP port.
    gateway = compose["services"]["gateway"]
    peer = load_config(DOCKER / "config" / "gateway.yaml").peer("orthanc")
    assert peer.dicomweb_url is not None and peer.dicomweb_url.startswith("https://orthanc:")
    assert files[_targets(gateway)[gateway["environment"]["SSL_CERT_FILE"]]] == "./secrets/tls/ca.pem"
    for path in [DOCKER / "compose.yaml", DOCKER / "compose.local.yaml", *(DOCKER / "config").glob("*.yaml")]:
        assert "http://orthanc" not in path.read_text(), path


RAY_TLS = ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")


def test_rays_ports_speak_mutual_tls_in_every_ray_process() -> None:
    """Every compose service that runs Ray (the training cluster's head, workers and driver, and
    serving's own Ray) has RAY_USE_TLS on with a certificate, key and CA that it mounts: the
    training cluster's ``ray.pem``, serving's own ``serving-ray.pem``; make-secrets.sh issues
    them for every address of compose's network (Ray's nodes dial each other by IP).
    (tests/security/test_ray_tls.py runs a real head with these settings.)"""
    compose = _compose()
    files = _files(compose)
    expected = {"ray-head": "ray", "ray-worker": "ray", "trainer": "ray", "serving": "serving-ray"}
    for name, certificate in expected.items():
        service = compose["services"][name]
        env = service["environment"]
        assert env.get("RAY_USE_TLS") == "1", name
        targets = _targets(service)
        mounted = {variable: files[targets[env[variable]]] for variable in RAY_TLS}
        assert mounted == {
            "RAY_TLS_SERVER_CERT": f"./secrets/tls/{certificate}.pem",
            "RAY_TLS_SERVER_KEY": f"./secrets/tls/{certificate}-key.pem",
            "RAY_TLS_CA_CERT": "./secrets/tls/ca.pem",
        }, name
    for name, service in compose["services"].items():  # no Ray process without TLS
        command = " ".join(_strings([service.get("command")]))
        if name not in expected:
            assert "ray start" not in command and "RAY_ADDRESS" not in (service.get("environment") or {}), (
                name
            )
    (subnet,) = [pool["subnet"] for pool in compose["networks"]["default"]["ipam"]["config"]]
    script = (DOCKER / "make-secrets.sh").read_text()
    assert f'RAY_NODE_NETWORK="${{RAY_NODE_NETWORK:-{subnet}}}"' in script
    assert '("ray",), extra_names=("ray-head", *nodes)' in script
    assert '("serving-ray",), extra_names=("serving", *nodes)' in script


# --- Kubernetes --------------------------------------------------------------------------------------


def _manifests(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = doc["spec"].get("rayClusterConfig") or doc["spec"].get("rayClusterSpec") or doc["spec"]
    specs = [cluster["headGroupSpec"]["template"]["spec"]]
    return specs + [group["template"]["spec"] for group in cluster["workerGroupSpecs"]]


def _secret_volume(spec: dict[str, Any], mount_path: str) -> dict[str, Any]:
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == mount_path.rstrip("/")]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    secret: dict[str, Any] = volume["secret"]
    return secret


@pytest.mark.parametrize(
    ("manifest", "kind", "secret", "keys"),
    [
        ("rayservice.yaml", "RayService", "radgate-serving-keys", KEYS["serving"]),
        ("raycluster.yaml", "RayCluster", "radgate-training-keys", KEYS["ray-head"]),
        ("rayjob-train.yaml", "RayJob", "radgate-training-keys", KEYS["trainer"]),
    ],
)
def test_kubernetes_pods_mount_only_their_keys(manifest: str, kind: str, secret: str, keys: set[str]) -> None:
    (doc,) = [d for d in _manifests(manifest) if d["kind"] == kind]
    for spec in _pod_specs(doc):
        volume = _secret_volume(spec, KEYS_DIR)
        assert volume["secretName"] == secret
        assert {item["path"] for item in volume["items"]} == keys  # only these files are projected
        (container,) = spec["containers"]
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["RADGATE_KEY_FILE"]["value"].startswith(KEYS_DIR)
        assert "RADGATE_PROJECT_KEY" not in env
    text = (K8S / manifest).read_text()
    assert "radgate-project-key" not in text


@pytest.mark.parametrize("manifest", ["rayservice.yaml", "raycluster.yaml", "rayjob-train.yaml"])
def test_kubernetes_ray_pods_speak_mutual_tls_with_a_certificate_of_their_own(
    manifest: str, tmp_path: Path
) -> None:
    """Every Ray pod (head and workers) runs Ray with RAY_USE_TLS and a certificate its init
    container issues for the pod's IP and the namespace's service names from the Ray CA (Secret
    radgate-ray-ca), whose key only the init container mounts. The init container's own script,
    run here, makes a certificate that verifies against the Ray CA and names the pod's IP, and
    leaves no CA key behind."""
    import ipaddress
    import subprocess
    import sys

    from cryptography import x509

    from governance.tls import make_dev_certificates

    (doc,) = [d for d in _manifests(manifest) if d["kind"] in ("RayService", "RayCluster", "RayJob")]
    scripts = set()
    for spec in _pod_specs(doc):
        volumes = {v["name"]: v for v in spec["volumes"]}
        (init,) = spec["initContainers"]
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RAY_USE_TLS"] == "1"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        for variable in RAY_TLS:
            directory = str(Path(env[variable]).parent)
            assert mounts[directory]["readOnly"] is True and "emptyDir" in volumes[mounts[directory]["name"]]
        init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
        ca_volume = volumes[next(n for n in init_mounts if "secret" in volumes[n])]
        assert ca_volume["secret"]["secretName"] == "radgate-ray-ca"
        assert ca_volume["name"] not in {
            m["name"] for m in container["volumeMounts"]
        }  # the CA key: init only
        assert init["image"].startswith("radgate/")  # a RadGate image (governance.tls)
        scripts.add(init["command"][-1])
    (script,) = scripts
    ca = make_dev_certificates(tmp_path / "ray-ca")
    secret, out = tmp_path / "secret", tmp_path / "out"
    secret.mkdir()
    out.mkdir()
    (secret / "ca.crt").write_bytes(ca.ca_certificate.read_bytes())
    (secret / "ca.key").write_bytes((tmp_path / "ray-ca" / "ca-key.pem").read_bytes())
    local = script.replace("/run/radgate-ray-tls", str(out)).replace("/run/radgate-ray-ca", str(secret))
    env = {"POD_IP": "10.42.7.9", "POD_NAMESPACE": "radgate", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", local], check=True, env=env, cwd=REPO)
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "ray-key.pem", "ray.pem"]
    certificate = x509.load_pem_x509_certificate((out / "ray.pem").read_bytes())
    certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.ca_certificate.read_bytes()))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.42.7.9") in names.get_values_for_type(x509.IPAddress)
    assert "*.radgate.svc.cluster.local" in names.get_values_for_type(x509.DNSName)


def test_rayservice_serves_https_on_every_node_with_its_certificate() -> None:
    from serving.config import ServeConfig

    docs = _manifests("rayservice.yaml")
    (service,) = [d for d in docs if d["kind"] == "RayService"]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    options = yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]
    serve = ServeConfig.model_validate(yaml.safe_load(config_map["data"]["serve.yaml"]))
    assert serve.tls is not None
    assert (options["ssl_certfile"], options["ssl_keyfile"]) == (
        str(serve.tls.certificate),
        str(serve.tls.private_key),
    )
    for spec in _pod_specs(service):
        volume = _secret_volume(spec, TLS_DIR)
        assert volume["secretName"] == "radgate-serving-tls"
        projected = {TLS_DIR + item["path"] for item in volume["items"]}
        assert {options["ssl_certfile"], options["ssl_keyfile"]} <= projected
        (container,) = spec["containers"]
        for probe in ("readinessProbe", "livenessProbe"):
            argv = container[probe]["exec"]["command"]
            assert argv[:2] == ["python", "-c"]
            compile(argv[2], probe, "exec")  # the folded YAML is one valid Python program
            command = " ".join(shlex.quote(part) for part in argv)
            assert "https://localhost:8000/-/healthz" in command and f"{TLS_DIR}ca.crt" in command
            assert f"{TLS_DIR}ca.crt" in projected


def test_healthcheck_speaks_https_and_verifies_the_ca(tmp_path: Path) -> None:
    """``healthcheck.py https URL CAFILE``, the check of serving and the UI: 0 from a server whose
    certificate the CA issued, 1 when the CA is another one or the server speaks plaintext."""
    import http.server
    import subprocess
    import sys
    import threading

    from governance.tls import make_dev_certificates, server_context

    ours, other = make_dev_certificates(tmp_path / "a"), make_dev_certificates(tmp_path / "b")

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    check = [sys.executable, str(DOCKER / "healthcheck.py")]
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok) as plain:
        threading.Thread(target=plain.serve_forever, daemon=True).start()
        url = f"https://localhost:{plain.server_address[1]}/-/healthz"
        assert subprocess.run([*check, "https", url, str(ours.ca_certificate)], timeout=30).returncode == 1
        plain.shutdown()
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok) as server:
        context = server_context(ours.server_certificate, ours.server_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"https://localhost:{server.server_address[1]}/-/healthz"
        assert subprocess.run([*check, "https", url, str(ours.ca_certificate)], timeout=30).returncode == 0
        assert subprocess.run([*check, "https", url, str(other.ca_certificate)], timeout=30).returncode == 1
        server.shutdown()


def test_each_services_mounted_keys_load_as_its_code_loads_them(tmp_path: Path) -> None:
    """make-secrets.sh's files, placed where compose mounts them for each service, read by
    RadGate's own loaders: gateway, serving and training sign as restricted writers (each its own
    scope, no anchors), the gateway pseudonymises; the UI and the admin console sign as the
    governance audit writer; every one verifies each writer's entries in its scope only; none can
    load a key it is not given."""
    import os
    import shutil
    import subprocess
    import sys

    from governance.keyring import (
        SERVICE_WRITERS,
        SERVING_STORE,
        UI_SESSION,
        KeyMissing,
        load_audit_signer,
        load_audit_verifier,
        load_broker_sealer,
        load_store_key,
    )
    from governance.keys import KeyError_, load_project_key, project_key_id
    from governance.settings import Settings

    (tmp_path / "secrets").mkdir()
    shutil.copy(DOCKER / "make-secrets.sh", tmp_path / "make-secrets.sh")
    env = {"PATH": os.environ["PATH"], "RADGATE": str(Path(sys.executable).with_name("radgate"))}
    made = subprocess.run(
        ["sh", str(tmp_path / "make-secrets.sh")], capture_output=True, env=env, timeout=120
    )
    assert made.returncode == 0, made.stderr
    compose = _compose()
    files = _files(compose)
    writers = {}
    pseudonym_key_id = ""
    for name in KEYS:
        directory = tmp_path / "mounted" / name
        directory.mkdir(parents=True)
        for target, source in _targets(compose["services"][name]).items():
            if target.startswith(KEYS_DIR):
                shutil.copy(tmp_path / files[source].removeprefix("./"), directory / Path(target).name)
        settings = Settings(key_file=directory / "project.key", project_key=None)
        signer = load_audit_signer(settings, create=False)
        verifier = load_audit_verifier(settings, create=False)
        if name in WRITERS:
            assert signer.scope == SERVICE_WRITERS[WRITERS[name]], (name, signer.scope)
            assert signer.key_id != verifier.key_id
            writers[WRITERS[name]] = signer
        else:
            assert signer.scope is None and signer.key_id == verifier.key_id, name
        if name == "gateway":
            assert load_project_key(settings, create=False).sealer is not None  # pseudonyms, sealing
            pseudonym_key_id = load_project_key(settings, create=False).key_id
        else:
            with pytest.raises(KeyError_):
                load_project_key(settings, create=False)
            with pytest.raises(KeyMissing):
                load_broker_sealer(settings, create=False)
        for purpose, holder in ((SERVING_STORE, "serving"), (UI_SESSION, "ui")):
            if name == holder:
                load_store_key(purpose, settings, create=False)
            else:
                with pytest.raises(KeyMissing):
                    load_store_key(purpose, settings, create=False)
        if "project.key.id" in KEYS[name]:  # training's evidence: which key made the data
            assert project_key_id(settings) == pseudonym_key_id, name
        assert sorted(p.name for p in directory.iterdir()) == sorted(KEYS[name])  # nothing created
    # Every verifier takes each writer's own entries, and only those.
    assert sorted(writers) == sorted(SERVICE_WRITERS)
    own = {"gateway": "gateway.c-store", "serving": "serve.predict", "training": "model.register"}
    for name in KEYS:
        settings = Settings(key_file=tmp_path / "mounted" / name / "project.key", project_key=None)
        verifier = load_audit_verifier(settings, create=False)
        message = b"radgate-audit-entry-v2\0" + b"0" * 64
        for writer, signer in writers.items():
            assert verifier.verify(signer.key_id, message, signer.sign(message)), (name, writer)
            assert verifier.permits(signer.key_id, own[writer]), (name, writer)
            for governance in ("model.approve", "model.promote", "model.revoke", "policy.sign"):
                assert not verifier.permits(signer.key_id, governance), (name, writer, governance)


def test_mlflow_serves_https_and_every_client_verifies_it() -> None:
    mlflow = _https_service("mlflow", 5000)
    compose = _compose()
    command = mlflow["command"]
    options = shlex.split(command[command.index("--uvicorn-opts") + 1])
    certificate = options[options.index("--ssl-certfile") + 1]
    key = options[options.index("--ssl-keyfile") + 1]
    assert _mounted(certificate, mlflow) and _mounted(key, mlflow)
    # The image's own command is the same server: compose only adds TLS to it.
    dockerfile = (DOCKER / "mlflow.Dockerfile").read_text()
    for argument in command[: command.index("--uvicorn-opts")]:
        assert f'"{argument}"' in dockerfile, argument
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for variable in ("RADGATE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):
            if variable in env:
                assert env[variable].startswith("https://mlflow:"), name
                assert _mounted(env["MLFLOW_TRACKING_SERVER_CERT_PATH"], service), name


def test_mlflow_on_kubernetes_serves_https_and_every_client_verifies_it() -> None:
    """docker/k8s/mlflow.yaml: HTTPS only, with a certificate and key mounted from its own Secret,
    HTTPS probes; every pod that names a tracking URI reaches https:// and verifies it against a
    mounted CA file (was plain HTTP on Kubernetes)."""
    containers = _k8s_containers()
    (server,) = [c for c in containers if c[0].startswith("mlflow.yaml:Deployment")]
    where, container, _, files = server
    args = container["args"]
    (opts,) = [a.split("=", 1)[1] for a in args if a.startswith("--uvicorn-opts=")]
    options = shlex.split(opts)
    for flag in ("--ssl-certfile", "--ssl-keyfile"):
        assert options[options.index(flag) + 1] in files, flag
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    pod = next(pod for w, pod in _k8s_pods() if w.startswith("mlflow.yaml:Deployment"))
    (tls,) = [v["secret"] for v in pod["volumes"] if "--ssl-keyfile" in opts and v["name"] == "mlflow-tls"]
    assert tls["secretName"] == "radgate-mlflow-tls"
    checked = 0
    for where, _, env, files in containers:
        for variable in ("RADGATE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):
            if variable in env:
                assert env[variable].startswith("https://radgate-mlflow:"), (where, variable)
                assert env.get("MLFLOW_TRACKING_SERVER_CERT_PATH") in files, where
                checked += 1
    assert checked >= 6  # RayService, RayCluster and RayJob pods
    assert "http://radgate-mlflow" not in "".join(p.read_text() for p in K8S.glob("*.yaml"))


def test_podman_compose_merges_the_local_override_and_writes_it_back() -> None:
    """podman-compose's own merge of compose.yaml with compose.local.yaml (its !override and !reset
    tags) must give a file it can write back: `scripts/containers.sh` starts the stack from
    that. Its !override copies a list one level deep, so a long-form entry under it (a mapping)
    leaves YAML nodes in the result and the stack never starts."""
    import podman_compose  # registers its !override / !reset tags with PyYAML's safe loader

    merged: dict[str, Any] = {}
    for name in ("compose.yaml", "compose.local.yaml"):
        content = yaml.safe_load((DOCKER / name).read_text())
        podman_compose.rec_merge(merged, podman_compose.normalize(content))
    merged = podman_compose.normalize_final(merged, str(DOCKER))
    written = yaml.safe_load(yaml.safe_dump(merged))
    assert written["services"]["orthanc"]["image"] == "localhost/radgate/orthanc:latest"
    assert set(_targets(written["services"]["orthanc"]).values()) >= {
        "tls_ca",
        "orthanc_tls_cert",
        "orthanc_tls_key",
    }


# --- TLS to PostgreSQL -------------------------------------------------------------------------------

_POSTGRES_URL = re.compile(r"postgresql(?:\+\w+)?://[^\s\"']+")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _require_verified_tls(where: str, url: str, env: dict[str, str], ca_files: set[str]) -> None:
    """libpq's options from the URL, else from the process's PGSSLMODE / PGSSLROOTCERT."""
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(url).query)
    mode = query.get("sslmode", [env.get("PGSSLMODE", "")])[-1]
    root = query.get("sslrootcert", [env.get("PGSSLROOTCERT", "")])[-1]
    assert mode == "verify-full", f"{where}: {url} does not verify the server (sslmode={mode!r})"
    assert root in ca_files, f"{where}: {url} verifies against {root!r}, which is not mounted there"


def test_every_postgresql_url_in_compose_requires_verified_tls() -> None:
    compose = _compose()
    checked = 0
    for name, service in compose["services"].items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        for text in _strings([env, service.get("command"), service.get("entrypoint")]):
            for url in _POSTGRES_URL.findall(text):
                _require_verified_tls(name, url, env, set(_targets(service)))
                checked += 1
        if any("PGPASSWORD" in key for key in env):  # any libpq client of the catalog
            assert env.get("PGSSLMODE") == "verify-full", name
            assert env.get("PGSSLROOTCERT") in _targets(service), name
    assert checked >= 5  # the services' catalog URL and MLflow's backend store at least
    # The server: TLS on with its own certificate, and TLS only for every network client.
    postgres = compose["services"]["postgres"]
    command = postgres["command"]
    options = dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "-c")
    assert options["ssl"] == "on"
    assert _mounted(options["ssl_cert_file"], postgres)
    assert postgres["environment"]["POSTGRES_SSL_KEY_COPY"] == options["ssl_key_file"]
    assert _mounted(postgres["environment"]["POSTGRES_SSL_KEY_SOURCE"], postgres)
    (hba_mount,) = [v for v in postgres["volumes"] if str(v).split(":")[1] == options["hba_file"]]
    rules = [
        line.split()
        for line in (DOCKER / hba_mount.split(":")[0].removeprefix("./")).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {rule[0] for rule in rules} == {"local", "hostssl"}, rules  # no plaintext `host` rule
    assert all(rule[-1] != "trust" for rule in rules if rule[0] == "hostssl")
    # The local stack's peer image makes the key's private copy itself (its own entrypoint).
    override = yaml.load((DOCKER / "compose.local.yaml").read_text(), Loader=_ComposeLoader)
    assert "entrypoint" in override["services"]["postgres"]  # reset to the image's
    entrypoint = (DOCKER / "peers" / "postgres-entrypoint.sh").read_text()
    assert 'cp "$POSTGRES_SSL_KEY_SOURCE" "$POSTGRES_SSL_KEY_COPY"' in entrypoint


def _k8s_pods() -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec in the manifests (Deployments, KubeRay heads and worker groups)."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(where: str, value: Any) -> None:
        if isinstance(value, dict):
            if "containers" in value:
                found.append((where, value))
                return
            for key, child in value.items():
                walk(f"{where}/{key}", child)
        elif isinstance(value, list):
            for child in value:
                walk(where, child)

    for path in sorted(K8S.glob("*.yaml")):
        for doc in _manifests(path.name):
            walk(f"{path.name}:{doc.get('kind', 'values')}", doc)
    return found


def _k8s_containers() -> list[tuple[str, dict[str, Any], dict[str, str], set[str]]]:
    """(where, container, its environment with the ConfigMaps it takes, the secret files mounted
    in it) of every container in the manifests."""
    config_maps = {
        doc["metadata"]["name"]: doc.get("data", {})
        for path in K8S.glob("*.yaml")
        for doc in _manifests(path.name)
        if doc.get("kind") == "ConfigMap"
    }
    out = []
    for where, pod in _k8s_pods():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                env.update(config_maps[source["configMapRef"]["name"]])
            env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
            files = set()
            for mount in container.get("volumeMounts", []):
                secret = volumes[mount["name"]].get("secret")
                if secret is not None:
                    files |= {f"{mount['mountPath']}/{i['path']}" for i in secret.get("items", [])}
            out.append((f"{where} {container['name']}", container, env, files))
    return out


def test_every_postgresql_url_on_kubernetes_requires_verified_tls() -> None:
    checked = 0
    for where, container, env, ca_files in _k8s_containers():
        texts = _strings([env, container.get("command"), container.get("args")])
        for url in {u for text in texts for u in _POSTGRES_URL.findall(text)}:
            _require_verified_tls(where, url, env, ca_files)
            checked += 1
    assert checked >= 6  # RayService, RayCluster and RayJob pods, MLflow's backend store
    values = yaml.safe_load((K8S / "postgresql-values.yaml").read_text())
    assert values["tls"]["enabled"] is True and values["tls"]["certificatesSecret"]
    rules = [line.split() for line in values["primary"]["pgHbaConfiguration"].splitlines() if line.strip()]
    plaintext = [rule for rule in rules if rule[0] == "host"]
    assert all(rule[3] in ("127.0.0.1/32", "::1/128") for rule in plaintext), plaintext  # loopback only
    assert any(rule[0] == "hostssl" for rule in rules)


# --- TLS to the S3 server ----------------------------------------------------------------------------

_S3_SETTINGS = ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")


def _require_https_s3(where: str, env: dict[str, str], ca_files: set[str]) -> int:
    """Every S3 endpoint of a process is HTTPS, verified against a CA file mounted there."""
    endpoints = [env[name] for name in _S3_SETTINGS if name in env]
    for endpoint in endpoints:
        assert endpoint.startswith("https://"), f"{where}: S3 endpoint {endpoint} is not HTTPS"
        assert env.get("AWS_CA_BUNDLE") in ca_files, f"{where}: AWS_CA_BUNDLE is not a mounted CA"
        if "MLFLOW_TRACKING_URI" in env or "RADGATE_MLFLOW_TRACKING_URI" in env:
            # an MLflow client fetching a presigned S3 URL uses `requests` (certifi, not
            # AWS_CA_BUNDLE): it would fail verification and retry for minutes
            assert env.get("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD") == "false", where
    return len(endpoints)


def test_every_s3_endpoint_in_compose_is_https_and_verified() -> None:
    compose = _compose()
    checked = 0
    for name, service in compose["services"].items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        checked += _require_https_s3(name, env, set(_targets(service)))
        for text in _strings([service.get("command"), service.get("entrypoint")]):
            assert "http://minio" not in text, name  # a command's own S3 URL (the buckets one-shot)
    assert checked >= 6
    minio = compose["services"]["minio"]
    command = minio["command"]
    certs = command[command.index("--certs-dir") + 1]
    for name in ("public.crt", "private.key"):
        assert _mounted(f"{certs}/{name}", minio), name
    # The local stack's S3 peer (moto's server) serves the same certificate.
    override = yaml.load((DOCKER / "compose.local.yaml").read_text(), Loader=_ComposeLoader)
    local = override["services"]["minio"]
    mounted = {f"/run/secrets/{secret}": secret for secret in local["secrets"]}
    argv = local["command"]
    assert mounted[argv[argv.index("--ssl-cert") + 1]] == "minio_tls_cert"
    assert mounted[argv[argv.index("--ssl-key") + 1]] == "minio_tls_key"
    for name, service in override["services"].items():
        for text in _strings([service.get("environment"), service.get("command")]):
            assert "http://minio" not in text, f"local {name}"


def test_every_s3_endpoint_on_kubernetes_is_https_and_verified() -> None:
    checked = sum(_require_https_s3(where, env, files) for where, _, env, files in _k8s_containers())
    assert checked >= 6


# --- Triton: explicit model control, read-only repository ---------------------------------------------


def test_triton_loads_only_what_radgate_hands_it() -> None:
    """Triton polling its repository would load (and reload) whatever files appear there,
    bypassing the gate's loader and its hash checks: every deployment runs it in explicit mode
    with the repository mounted read-only."""
    triton = _compose()["services"]["triton"]
    argv = [str(a) for a in triton["command"]]
    assert "--model-control-mode=explicit" in argv and not any("poll" in a for a in argv), argv
    mounts = [str(v) for v in triton["volumes"] if str(v).split(":")[1] == "/models"]
    assert mounts and all(m.endswith(":ro") for m in mounts), mounts
    manifests = yaml.safe_load_all((DOCKER / "k8s" / "triton.yaml").read_text())
    deployment = next(d for d in manifests if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--model-control-mode=explicit" in container["args"]
    assert not any("poll" in str(a) for a in container["args"]), container["args"]
    models = [m for m in container["volumeMounts"] if m["mountPath"] == "/models"]
    assert models and all(m.get("readOnly") for m in models)


def test_triton_grpc_is_mutual_tls_and_serving_calls_it_so() -> None:
    """Triton's gRPC port (what serving calls) speaks mutual TLS only in every deployment, its
    HTTP and metrics stay on the container's loopback, and serving's Triton models verify it
    (tests/security/test_triton_tls.py runs the same flags on the real tritonserver)."""
    from serving.config import ServeConfig

    argv = [str(a) for a in _compose()["services"]["triton"]["command"]]
    manifests = list(yaml.safe_load_all((DOCKER / "k8s" / "triton.yaml").read_text()))
    deployment = next(d for d in manifests if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for args in (argv, [str(a) for a in container["args"]]):
        for flag in ("--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true", "--http-address=127.0.0.1"):
            assert flag in args, (flag, args)
        assert any(a.startswith("--grpc-server-cert=") for a in args)
        assert any(a.startswith("--grpc-root-cert=") for a in args)
    service = next(d for d in manifests if d["kind"] == "Service")
    assert [p["name"] for p in service["spec"]["ports"]] == ["grpc"]
    serve_files = [DOCKER / "config" / "serve.yaml"]
    rayservice = next(yaml.safe_load_all((DOCKER / "k8s" / "rayservice.yaml").read_text()))
    configs = [yaml.safe_load(p.read_text()) for p in serve_files]
    configs += [yaml.safe_load(v) for v in rayservice.get("data", {}).values() if "models:" in str(v)]
    assert len(configs) == 2, "serve.yaml and the RayService's serve config"
    for raw in configs:
        for model in ServeConfig.model_validate(raw).models:
            if model.backend.value == "triton":
                assert model.triton_tls is not None and model.triton_tls.certificate is not None, model.name
