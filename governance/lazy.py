"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package's public names stay importable from the package (``from imaging.deid import
Deidentifier``), but the submodule that defines a name is imported only when the name is first
used. The ``radgate`` CLI imports every package's ``cli`` module to build its help; with eager
``__init__`` re-exports that pulled torch, scipy, pynetdicom and MLflow into ``radgate --help``.

A package lists its re-exports once, as the imports of its ``if TYPE_CHECKING:`` block (which
type checkers and readers see as ordinary imports), and ends with::

    __getattr__, __dir__ = lazy_exports(__name__, __file__)
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["lazy_exports", "type_checking_imports"]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def type_checking_imports(source: str) -> dict[str, str]:
    """Name -> defining module of each ``from MODULE import NAME`` in the top-level
    ``if TYPE_CHECKING:`` blocks of ``source`` (absolute imports, no ``as`` renames)."""
    owner: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.ImportFrom):
                continue
            if statement.level or statement.module is None:
                raise ValueError("lazy re-exports must use absolute imports")
            for alias in statement.names:
                if alias.asname is not None or alias.name == "*":
                    raise ValueError(f"lazy re-export of {alias.name!r} must be a plain name")
                if alias.name in owner:
                    raise ValueError(
                        f"{alias.name!r} imported from {owner[alias.name]} and {statement.module}"
                    )
                owner[alias.name] = statement.module
    return owner


class _ShadowedPackage(ModuleType):
    """A package re-exporting a name that is also one of its submodules (``gate`` from
    ``governance.approvals.gate``). Importing the submodule makes Python set the package
    attribute to the module; this keeps the exported object there instead, as an eager
    ``from .gate import gate`` in ``__init__`` would have."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, ModuleType)
            and value.__name__ == f"{self.__name__}.{name}"
            and hasattr(value, name)
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(package: str, init_file: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for ``package``, whose ``__init__`` is
    ``init_file``: each name its ``if TYPE_CHECKING:`` block imports is imported from its module
    on first use, then cached in the package."""
    owner = type_checking_imports(Path(init_file).read_text(encoding="utf-8"))
    if any(module == f"{package}.{name}" for name, module in owner.items()):
        sys.modules[package].__class__ = _ShadowedPackage

    def __getattr__(name: str) -> Any:
        module = owner.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        target = importlib.import_module(package)
        # Bind every name this module provides: importing ``package.gate`` makes the import
        # system set the attribute ``gate`` to the submodule, which would then shadow a
        # re-exported function of the same name (``governance.approvals.gate``).
        for other, source in owner.items():
            if source == module:
                setattr(target, other, getattr(imported, other))
        return getattr(imported, name)

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *owner})

    return __getattr__, __dir__
