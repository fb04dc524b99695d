"""ruff and mypy run with the tests: the whole repository lints clean, and the packages, scripts/
and tests/ type-check (settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False
    )


def test_ruff_is_clean_on_the_whole_repository() -> None:
    done = _run("ruff", "check", ".")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


@pytest.mark.parametrize("target", [(), ("scripts",), ("tests",)], ids=["packages", "scripts", "tests"])
def test_mypy_is_clean(target: tuple[str, ...]) -> None:
    done = _run("mypy", *target)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
