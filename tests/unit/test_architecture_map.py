"""ARCHITECTURE.md stays true: every RadGate module (or module attribute) it names in backticks
exists, and every file path it names is in the repository."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = "governance|imaging|training|serving|radgate"
_NAME = re.compile(rf"`((?:{PACKAGES})(?:\.[A-Za-z_0-9]+)*)")
_PATH = re.compile(rf"`((?:{PACKAGES}|configs|tests|scripts|docs)/[^`*\s]+)`")


def _text() -> str:
    return (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _exists(name: str) -> bool:
    """A module, or a name a module defines (``training.run.train``), found without importing."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            continue
        if spec is None or spec.origin is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        source = Path(spec.origin).read_text(encoding="utf-8")
        return (
            len(rest) == 1
            and re.search(rf"^(def|class) {rest[0]}\b|^{rest[0]}\b.*=", source, re.M) is not None
        )
    return False


def test_every_module_it_names_exists() -> None:
    names = set(_NAME.findall(_text()))
    assert {"governance.tags", "imaging.deid", "serving.ui", "training.run.train"} <= names
    missing = sorted(n for n in names if not _exists(n))
    assert not missing, f"ARCHITECTURE.md names modules that do not exist: {missing}"


def test_every_path_it_names_exists() -> None:
    paths = set(_PATH.findall(_text()))
    assert "training/networks.py" in paths
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"
