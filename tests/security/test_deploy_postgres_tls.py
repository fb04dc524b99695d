"""Attack: read or alter the catalog on the wire, or stand in for PostgreSQL, inside the deployment's
network (docker/compose.yaml). Before, the compose PostgreSQL spoke plaintext and the catalog URL
asked for no TLS: anyone on the compose network saw the catalog's rows and the password exchange's
traffic, and any host answering as ``postgres`` was the catalog.

Here the real PostgreSQL server runs the way the ``local`` stack's peer image runs it
(docker/peers/postgres-entrypoint.sh, as the postgres user) with compose's own environment,
command, pg_hba.conf and a key file mounted with the host file's mode (0644, as compose mounts
secrets), and RadGate connects with compose's catalog URL:

- the entrypoint makes the private copy of the key (0600, the server's user) that PostgreSQL
  insists on, and the server starts with TLS on;
- a plaintext connection is refused (pg_hba.conf: hostssl only);
- RadGate's catalog connects over TLS, verifying the server's certificate and its name
  (sslmode=verify-full); a server name the certificate does not carry is refused.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml

from governance.tls import issue_service_certificates, make_dev_certificates
from tests.processes import stop_process

pytestmark = pytest.mark.integration

DOCKER = Path(__file__).resolve().parents[2] / "docker"
SYSTEM_USER = "postgres"


def _pg_ci() -> Any:
    from tests.integration.conftest import load_script

    return load_script("scripts/ci/postgres.py", "radgate_ci_postgres")


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, Any]]:
    """docker/peers/postgres-entrypoint.sh with compose's postgres service settings, the
    container's paths replaced by files here (secrets, the mounted pg_hba.conf, the key's copy)."""
    pg_ci = _pg_ci()
    bindir = pg_ci.find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (scripts/ci/install-postgres.sh)")
    as_root = os.geteuid() == 0
    work = pg_ci.scratch_dir("radgate-deploy-pg-")
    tls = work / "tls"
    make_dev_certificates(tls)
    issue_service_certificates(tls, ("postgres", "serving"))
    password = work / "postgres_password"
    password.write_text("deploy-secret\n")
    (work / "data").mkdir()
    service = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["postgres"]
    compose_files = yaml.safe_load((DOCKER / "compose.yaml").read_text())["secrets"]
    # Container path -> file here: the mounted secrets (with the host's 0644, as compose mounts
    # them), the bind-mounted configs, the private copy the entrypoint makes.
    paths: dict[str, str] = {"/var/lib/postgresql/data": str(work / "data")}
    for secret in service.get("secrets", []):
        source = secret if isinstance(secret, str) else secret["source"]
        target = f"/run/secrets/{secret}" if isinstance(secret, str) else secret["target"]
        name = Path(compose_files[source]["file"]).name
        local = password if source == "postgres_password" else tls / name
        mounted = work / "mounted" / name
        mounted.parent.mkdir(exist_ok=True)
        shutil.copyfile(local, mounted)
        os.chmod(mounted, 0o644)
        paths[target] = str(mounted)
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if source.startswith("./config/") and source.endswith(".conf"):
            paths[rest.split(":")[0]] = str(DOCKER / source.removeprefix("./"))
    env_settings = {k: str(v) for k, v in service["environment"].items()}
    copy = env_settings.get("POSTGRES_SSL_KEY_COPY", "/tmp/postgres-tls/server-key.pem")
    paths[copy] = str(work / "private" / Path(copy).name)

    def here(value: str) -> str:
        for container, local in sorted(paths.items(), key=lambda item: -len(item[0])):
            value = value.replace(container, local)
        return value

    port = pg_ci.free_port()
    env = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "PGDATA": str(work / "data"),
        "PGPORT": str(port),  # the entrypoint's sockets are in /tmp: a port of this test's own
        "LC_ALL": "C",
        **{k: here(v) for k, v in env_settings.items()},
    }
    command = [here(arg) for arg in service.get("command", ["postgres"])]
    assert command[0] == "postgres"
    argv = ["sh", str(DOCKER / "peers" / "postgres-entrypoint.sh"), *command]
    if as_root:
        entry = pwd.getpwnam(SYSTEM_USER)
        for path in (work, work / "data"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(work, 0o755)
        os.chmod(work / "data", 0o700)
        argv = ["runuser", "-u", SYSTEM_USER, "--", "env", *(f"{k}={v}" for k, v in env.items()), *argv]
    log = (work / "server.log").open("w")
    process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not (work / "data" / "postmaster.pid").exists() or not _ready(bindir, port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"postgres did not start: {(work / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"port": port, "work": work, "tls": tls, "copy": Path(paths[copy]), "password": "deploy-secret"}
    finally:
        stop_process(process)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _ready(bindir: Path | str, port: int) -> bool:
    """The server answers as ready (pg_isready): a listening socket alone is not enough, the
    server accepts TCP while it is still starting up and refuses every login then."""
    done = subprocess.run(
        [str(Path(bindir) / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
        capture_output=True,
        timeout=30,
    )
    return done.returncode == 0


def _compose_catalog_url(port: int, ca: Path, host: str = "postgres") -> str:
    """docker/compose.yaml's RADGATE_CATALOG_URL, its container paths and port made local; the
    server name stays (libpq verifies it) while ``hostaddr`` says where it listens here."""
    url = str(yaml.safe_load((DOCKER / "compose.yaml").read_text())["x-radgate-env"]["RADGATE_CATALOG_URL"])
    url = url.replace("@postgres:5432/", f"@{host}:{port}/").replace("/run/radgate-tls/ca.pem", str(ca))
    return url + "&hostaddr=127.0.0.1"


def test_the_entrypoint_keeps_a_private_copy_of_the_key(server: dict[str, Any]) -> None:
    copy: Path = server["copy"]
    assert (copy.stat().st_mode & 0o777) == 0o600
    if os.geteuid() == 0:
        assert copy.stat().st_uid == pwd.getpwnam(SYSTEM_USER).pw_uid


def test_plaintext_to_the_catalog_is_refused(server: dict[str, Any]) -> None:
    plain = sqlalchemy.create_engine(
        f"postgresql+psycopg://radgate:{server['password']}@127.0.0.1:{server['port']}/radgate?sslmode=disable"
    )
    with pytest.raises(sqlalchemy.exc.OperationalError, match=r"no encryption|no pg_hba\.conf entry"):
        plain.connect()
    plain.dispose()


def test_radgate_reaches_the_catalog_over_verified_tls(
    server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from governance.catalog import open_catalog
    from governance.settings import get_settings

    monkeypatch.setenv("PGPASSWORD", server["password"])  # the entrypoint's PGPASSWORD_FILE in compose
    monkeypatch.setenv("RADGATE_CATALOG_URL", _compose_catalog_url(server["port"], server["tls"] / "ca.pem"))
    get_settings.cache_clear()
    try:
        catalog = open_catalog()
        with catalog.engine.connect() as connection:
            encrypted = connection.execute(
                sqlalchemy.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
            assert encrypted.scalar() is True
        catalog.engine.dispose()
    finally:
        get_settings.cache_clear()


def test_a_server_name_the_certificate_does_not_carry_is_refused(server: dict[str, Any]) -> None:
    """verify-full: the certificate must name the host the URL names (here ``serving``, which a
    certificate of the same CA does name, but not this server's)."""
    wrong = sqlalchemy.create_engine(
        _compose_catalog_url(server["port"], server["tls"] / "ca.pem", host="serving"),
        connect_args={"password": server["password"]},
    )
    with pytest.raises(sqlalchemy.exc.OperationalError, match="does not match host name"):
        wrong.connect()
    wrong.dispose()
