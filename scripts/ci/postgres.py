"""A private PostgreSQL 15 cluster on 127.0.0.1 for tests, benchmarks and CI.

Debian's server binaries (``/usr/lib/postgresql/15/bin``) run a throw-away cluster: its own data
directory and Unix socket, a free TCP port on the loopback only, password (SCRAM) authentication
over TCP. ``pg_ctl`` refuses to run as root, so as root every server command runs as the
``postgres`` system user (``runuser``) on a data directory that user owns.

Used two ways:

- imported by path (the scale-out integration tests): ``PostgresCluster.start()`` /
  ``create_database(name)`` / ``url(name)`` / ``stop()``;
- ``python scripts/ci/postgres.py start --dir DIR [--db radgate --db mlflow]`` prints one JSON line
  (port, user, the SQLAlchemy URL of each database) and leaves the server running;
  ``python scripts/ci/postgres.py stop --dir DIR`` stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_USER = "postgres"


class PostgresError(RuntimeError):
    """The cluster could not be created, started or queried."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_bindir(version: str = "15") -> Path | None:
    """Debian's server binaries (``initdb``, ``pg_ctl``), or None when PostgreSQL is absent."""
    candidates = [Path(f"/usr/lib/postgresql/{version}/bin")]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


@dataclass
class PostgresCluster:
    """One ``postgres`` server with its own data directory under ``workdir``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    user: str = "radgate"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    bindir: Path | None = field(default_factory=find_bindir)
    # TLS: (certificate, private key) PEM files; TCP connections must then use TLS (hostssl).
    tls: tuple[Path, Path] | None = None

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL (``driver="postgresql"`` for libpq/MLflow-style URLs)."""
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if self.bindir is None:
            raise PostgresError("PostgreSQL server binaries not found (apt-get install postgresql-15)")
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env={**os.environ, "LC_ALL": "C"}
        )
        if result.returncode != 0:
            raise PostgresError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-1500:]}")
        return result

    def start(self) -> PostgresCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            # The postgres user must reach its data directory: pytest's tmp dirs are root-only.
            import pwd

            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
            os.chmod(self.workdir, 0o700)
            walk = self.workdir.parent
            while walk != walk.parent:
                mode = walk.stat().st_mode
                if not mode & 0o001:
                    raise PostgresError(f"{walk} is not traversable by {SYSTEM_USER}: use one under /tmp")
                walk = walk.parent
        if not (self.datadir / "PG_VERSION").exists():
            pwfile = self.workdir / "pwfile"
            pwfile.write_text(self.password + "\n")
            os.chmod(pwfile, 0o600)
            if self.as_root:
                shutil.chown(pwfile, SYSTEM_USER)
            try:
                self._run(
                    "initdb", "-D", str(self.datadir), "-U", self.user, f"--pwfile={pwfile}",
                    "--auth-local=peer", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-instructions",
                )  # fmt: skip
            finally:
                pwfile.unlink(missing_ok=True)
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.workdir}",
                # A throw-away test cluster: durability is not what is being tested, speed is.
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                "-c shared_buffers=32MB -c max_connections=100",
                *self._tls_options(),
            ]
        )
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-o", options, "-l", str(self.workdir / "server.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        self._wait_ready()
        return self

    def _tls_options(self) -> list[str]:
        """Copies the certificate and key where the server reads them (its own, 0600) and makes
        every TCP connection require TLS."""
        if self.tls is None:
            return []
        certificate, key = self.workdir / "server.pem", self.workdir / "server-key.pem"
        shutil.copyfile(self.tls[0], certificate)
        shutil.copyfile(self.tls[1], key)
        os.chmod(key, 0o600)
        if self.as_root:
            for path in (certificate, key):
                shutil.chown(path, SYSTEM_USER)
        hba = self.datadir / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        hba.write_text(
            "\n".join("hostssl" + line[4:] if line.startswith("host ") else line for line in lines) + "\n"
        )
        return ["-c ssl=on", f"-c ssl_cert_file={certificate}", f"-c ssl_key_file={key}"]

    def _connect(self, database: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password,
            dbname=database, autocommit=True, connect_timeout=5,
        )  # fmt: skip

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._connect() as connection:
                    connection.execute("SELECT 1")
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(f"PostgreSQL did not accept connections: {exc}") from exc
                time.sleep(0.2)

    def create_database(self, name: str) -> str:
        """Create ``name`` (if absent) and return its SQLAlchemy URL."""
        if not name.replace("_", "").isalnum():
            raise PostgresError(f"unsafe database name {name!r}")
        with self._connect() as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        with self._connect(database) as connection:
            return list(connection.execute(sql).fetchall())

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60", "stop")


def scratch_dir(prefix: str = "radgate-pg-") -> Path:
    """A fresh directory under the system temp dir (traversable by the postgres user)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def _state_file(directory: Path) -> Path:
    return directory / "radgate-postgres.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a cluster and print its URLs as one JSON line")
    start.add_argument("--dir", type=Path, default=None, help="working directory (default: a new temp dir)")
    start.add_argument("--db", action="append", default=None, help="database to create (repeatable)")
    stop = sub.add_parser("stop", help="stop the cluster started in --dir")
    stop.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "start":
        directory = args.dir or scratch_dir()
        cluster = PostgresCluster(directory).start()
        urls = {name: cluster.create_database(name) for name in (args.db or ["radgate"])}
        state = {"dir": str(directory), "port": cluster.port, "user": cluster.user, "urls": urls}
        _state_file(directory).write_text(json.dumps({**state, "password": cluster.password}))
        os.chmod(_state_file(directory), 0o600)
        print(json.dumps(state))
        return 0
    state = json.loads(_state_file(args.dir).read_text())
    PostgresCluster(args.dir, port=state["port"], user=state["user"], password=state["password"]).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
