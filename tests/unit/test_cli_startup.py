"""``radgate --help``, ``--version`` and the help of light commands import none of the heavy
libraries: each command imports what it needs when it runs (the start-up time itself is measured
by scripts/bench/cli_startup.py, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "torch",
    "scipy",
    "mlflow",
    "ray",
    "monai",
    "sqlalchemy",
    "pynetdicom",
    "pydicom",
    "fastapi",
    "numpy",
    "cryptography",
    "governance.settings",
    "governance.catalog",
    "governance.audit.log",
)

_PROBE = """
import contextlib, io, json, sys
from radgate.cli import app
with contextlib.redirect_stdout(io.StringIO()) as shown:
    try:
        app(sys.argv[1:], prog_name="radgate")
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "shown": shown.getvalue(), "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


def _probe(*argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{_PROBE}", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "argv",
    [("--help",), ("--version",), ("deid", "--help"), ("users", "--help"), ("audit", "verify", "--help")],
)
def test_help_and_version_import_no_heavy_library(argv: tuple[str, ...]) -> None:
    result = _probe(*argv)
    assert result["code"] == 0
    assert result["shown"], "the command printed nothing"
    assert result["heavy"] == []


def test_version_is_printed() -> None:
    result = _probe("--version")
    assert str(result["shown"]).startswith("radgate ")
