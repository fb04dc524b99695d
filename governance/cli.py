"""Governance commands: ``users``, ``audit``, ``model`` (approval workflow) and ``policy``.

The caller's token comes from ``--token`` or ``RADGATE_TOKEN``. Exit codes: 1 refused by the
workflow or policy, 2 bad input, 3 not authenticated, 4 role not allowed, 5 audit chain broken.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from governance.auth import Principal

__all__ = ["TOKEN_OPTION", "authorize_cli", "register"]

err = Console(stderr=True)
out = Console()

users_app = typer.Typer(help="Users, roles and tokens.", no_args_is_help=True)
policy_app = typer.Typer(help="The approval policy.", no_args_is_help=True)

TOKEN_OPTION = typer.Option(None, "--token", help="Your RadGate token (default: RADGATE_TOKEN).")


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the library's specific exceptions into one clear line and an exit code."""
    from governance.approvals import ApprovalError, RegistryError
    from governance.audit import AuditError, AuditPHIError
    from governance.auth import AuthenticationError, BootstrapError, PermissionDenied, UnknownUser, UserExists
    from governance.keys import KeyError_
    from governance.policy import PolicyError

    try:
        yield
    except AuthenticationError as exc:
        raise _fail(str(exc), 3) from exc
    except (PermissionDenied, BootstrapError) as exc:
        raise _fail(str(exc), 4) from exc
    except (ApprovalError, UserExists, UnknownUser) as exc:
        raise _fail(str(exc), 1) from exc
    except (PolicyError, AuditPHIError, AuditError, RegistryError, KeyError_, ValueError) as exc:
        raise _fail(str(exc), 2) from exc


def _principal(token: str | None) -> Principal:
    from governance.auth import principal_from_env_or_token

    return principal_from_env_or_token(token)


def authorize_cli(token: str | None, *roles: str) -> Principal:
    """For any package's Typer command: the caller (``--token`` or ``RADGATE_TOKEN``) if their
    role is one of ``roles`` (any role when none given); otherwise print one clear line and
    exit 3 (not authenticated) or 4 (role not allowed)."""
    from governance.auth import require_role

    with _errors():
        principal = _principal(token)
        if roles:
            require_role(principal, *roles)
    return principal


# ---- users --------------------------------------------------------------------------------


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="User or service name (letters, digits, - _ . @)."),
    role: str = typer.Option(
        ...,
        "--role",
        help="admin | data-steward | ml-engineer | clinical-reviewer | pacs-client | honest-broker | auditor",
    ),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Create a user and print its token once. The very first user may be created without a
    token and must be an admin; later users need an admin token."""
    import os

    from governance.auth import TOKEN_ENV

    with _errors():
        by = _principal(token) if (token or os.environ.get(TOKEN_ENV)) else None
        from governance.auth import add_user

        issued = add_user(name, role, by=by)
    err.print(f"created {issued.user.name} ({issued.user.role.value}); the token is shown only once:")
    print(issued.token)


@users_app.command("list")
def users_list(token: str | None = TOKEN_OPTION) -> None:
    """List users and roles (admin or auditor)."""
    from governance.auth import list_users

    with _errors():
        users = list_users(by=_principal(token))
    table = Table("name", "role", "created by", "created", "status")
    for u in users:
        table.add_row(
            u.name,
            u.role.value,
            u.created_by,
            u.created_at.isoformat(timespec="seconds"),
            "active" if u.active else "revoked",
        )
    out.print(table)


@users_app.command("rotate")
def users_rotate(
    name: str = typer.Argument(..., help="User whose token to replace."), token: str | None = TOKEN_OPTION
) -> None:
    """Replace a user's token (admin, or the user themself); prints the new token once."""
    from governance.auth import rotate_token

    with _errors():
        issued = rotate_token(name, by=_principal(token))
    err.print(f"new token for {issued.user.name}; the old one no longer works. Shown only once:")
    print(issued.token)


@users_app.command("revoke")
def users_revoke(
    name: str = typer.Argument(..., help="User to revoke."), token: str | None = TOKEN_OPTION
) -> None:
    """Revoke a user's token at once (admin)."""
    from governance.auth import revoke_user

    with _errors():
        info = revoke_user(name, by=_principal(token))
    out.print(f"revoked {info.name} ({info.role.value})")


# ---- policy -------------------------------------------------------------------------------


@policy_app.command("check")
def policy_check(
    path: Path | None = typer.Argument(None, help="Policy file (default: the one in force)."),
    model: str | None = typer.Option(None, "--model", help="Show the effective policy for this model."),
) -> None:
    """Validate a policy file and print the effective policy."""
    from governance.policy import default_policy_path, load_policy

    with _errors():
        policy = load_policy(path)
        effective = policy.for_model(model) if model else policy.default
    out.print(f"valid: {path or default_policy_path()} (sha256 {policy.sha256[:16]})")
    print(json.dumps(effective.model_dump(mode="json"), indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    from governance.approvals.cli import model_app
    from governance.audit.cli import audit_app

    app.add_typer(audit_app, name="audit")
    app.add_typer(model_app, name="model")
    app.add_typer(policy_app, name="policy")
