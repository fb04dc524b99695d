"""A command (or a service starting: they authenticate first) whose catalog database cannot be
reached says so in one line and exits 6, the password of the URL hidden; never a traceback.
A container that cannot reach its database exits this way and is restarted by compose."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PASSWORD = "s3cret-catalog-pw"
# well formed, so that the command gets as far as asking the catalog who it is
TOKEN = "rg_" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def _refused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("argv", [["catalog"], ["users", "list"], ["audit", "verify"]])
def test_unreachable_catalog_is_one_clear_line_and_exit_6(argv: list[str], tmp_path: Path) -> None:
    url = f"postgresql+psycopg://radgate:{PASSWORD}@127.0.0.1:{_refused_port()}/radgate"
    env = {
        **os.environ,
        "RADGATE_HOME": str(tmp_path / "home"),
        "RADGATE_TOKEN": TOKEN,
        "RADGATE_CATALOG_URL": url,
    }
    env.pop("RADGATE_TOKEN_FILE", None)
    done = subprocess.run(
        [sys.executable, "-m", "radgate", *argv], capture_output=True, text=True, timeout=120, env=env
    )
    output = done.stdout + done.stderr
    assert done.returncode == 6, output
    assert "cannot be reached" in done.stderr and "RADGATE_CATALOG_URL" in done.stderr, output
    assert "Traceback" not in output, output
    assert PASSWORD not in output
