"""Shared fixtures: an isolated RADGATE_HOME and project key for every test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TCP_NODELAY", "1")


@pytest.fixture(autouse=True)
def radgate_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from governance.settings import get_settings

    home = tmp_path / "radgate-home"
    monkeypatch.setenv("RADGATE_HOME", str(home))
    monkeypatch.setenv("RADGATE_PROJECT_KEY", "11" * 32)
    monkeypatch.delenv("RADGATE_CATALOG_URL", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def as_role(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """``as_role("data-steward")`` sets ``RADGATE_TOKEN`` (inherited by subprocesses) to a user
    of that role (``governance.testing.cast_token``) and returns the token."""
    from governance.testing import cast_token

    def use(role: str) -> str:
        token = cast_token(role)
        monkeypatch.setenv("RADGATE_TOKEN", token)
        return token

    return use
