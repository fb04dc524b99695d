"""What every package's ``radgate`` commands share: exit codes, the error line, the ``--token``
option and its caller, the mapping of governance errors to exit codes, and the progress bar.

Exit codes of the whole CLI: 0 done, 1 refused (by the workflow, the policy, or nothing found),
2 bad input, 3 not authenticated, 4 role not allowed, 5 audit chain broken, 6 the catalog
database cannot be reached.

Importing this module costs Typer and rich only: governance's own modules (catalog, keys,
MLflow) are imported when a command calls into them, so ``radgate --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

    from governance.auth import Principal

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CHAIN_BROKEN",
    "EXIT_FORBIDDEN",
    "EXIT_REFUSED",
    "EXIT_UNAUTHENTICATED",
    "EXIT_UNAVAILABLE",
    "TOKEN_HELP",
    "TOKEN_OPTION",
    "authorize_cli",
    "caller",
    "err",
    "exit_code",
    "fail",
    "governance_errors",
    "out",
    "progress_bar",
]

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAUTHENTICATED = 3
EXIT_FORBIDDEN = 4
EXIT_CHAIN_BROKEN = 5
EXIT_UNAVAILABLE = 6

TOKEN_HELP = "Your RadGate token (default: RADGATE_TOKEN, or the file named by RADGATE_TOKEN_FILE)."
TOKEN_OPTION = typer.Option(None, "--token", help=TOKEN_HELP)

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: MESSAGE`` on stderr (the message as is: no markup, no wrapping) and return
    the :class:`typer.Exit` to raise: ``raise fail("...") from exc``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


# Governance's exceptions and the exit code each one maps to, first match wins (subclasses
# before their bases). Named by module so that mapping them imports nothing: an exception can
# only be an instance of a class whose module is already imported, so a module that is not in
# ``sys.modules`` cannot have raised it, and importing it (the registry, the policy, the keys:
# tens of milliseconds) only to compare would cost every light command its start-up.
_EXIT_CODES: tuple[tuple[str, str, int], ...] = (
    ("governance.catalog.db", "CatalogUnavailable", EXIT_UNAVAILABLE),
    ("governance.auth.roles", "AuthenticationError", EXIT_UNAUTHENTICATED),
    ("governance.auth.roles", "PermissionDenied", EXIT_FORBIDDEN),
    ("governance.auth.roles", "BootstrapError", EXIT_FORBIDDEN),
    ("governance.approvals.workflow", "ApprovalError", EXIT_REFUSED),
    ("governance.auth.roles", "UserExists", EXIT_REFUSED),
    ("governance.auth.roles", "UnknownUser", EXIT_REFUSED),
    ("governance.policy.schema", "PolicyError", EXIT_BAD_INPUT),
    ("governance.audit.phi", "AuditPHIError", EXIT_BAD_INPUT),
    ("governance.audit.entries", "AuditError", EXIT_BAD_INPUT),
    ("governance.approvals.registry", "RegistryError", EXIT_BAD_INPUT),
    ("governance.keys", "KeyError_", EXIT_BAD_INPUT),
    ("builtins", "ValueError", EXIT_BAD_INPUT),
)


def exit_code(exc: BaseException) -> int | None:
    """The CLI's exit code for ``exc``, or ``None`` for an exception governance does not map."""
    for module_name, class_name, code in _EXIT_CODES:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(exc, cls):
            return code
    return None


@contextmanager
def governance_errors() -> Iterator[None]:
    """Turn governance's specific exceptions into one clear line and the CLI's exit code."""
    try:
        yield
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        raise fail(str(exc), code) from exc


def caller(token: str | None) -> Principal:
    """The caller: ``--token``, else ``RADGATE_TOKEN``, else the file named by ``RADGATE_TOKEN_FILE``."""
    from governance.auth import principal_from_env_or_token

    return principal_from_env_or_token(token)


def authorize_cli(token: str | None, *roles: str) -> Principal:
    """For any package's Typer command: the caller if their role is one of ``roles`` (any role
    when none given); otherwise print one clear line and exit 3 (not authenticated) or 4 (role
    not allowed)."""
    from governance.auth import require_role

    with governance_errors():
        who = caller(token)
        if roles:
            require_role(who, *roles)
    return who


def progress_bar(total: int, description: str) -> tuple[Progress, Callable[[object], None]]:
    """A rich progress bar on stderr (shown on a terminal, or anywhere with ``RADGATE_PROGRESS=1``)
    and the callback that advances it by one."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal and os.environ.get("RADGATE_PROGRESS") != "1",
    )
    task = progress.add_task(description, total=total, rate="")

    def advance(_: object) -> None:
        progress.advance(task)

    return progress, advance
