"""Governance commands: ``users``, ``audit``, ``model`` (approval workflow) and ``policy``.

The caller's token comes from ``--token`` or ``RADGATE_TOKEN``. Exit codes: 1 refused by the
workflow or policy, 2 bad input, 3 not authenticated, 4 role not allowed, 5 audit chain broken.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from governance.cli_support import TOKEN_OPTION, caller, err, governance_errors, out

__all__ = ["register"]

users_app = typer.Typer(help="Users, roles and tokens.", no_args_is_help=True)
policy_app = typer.Typer(help="The approval policy.", no_args_is_help=True)


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

    with governance_errors():
        by = caller(token) if (token or os.environ.get(TOKEN_ENV)) else None
        from governance.auth import add_user

        issued = add_user(name, role, by=by)
    err.print(f"created {issued.user.name} ({issued.user.role.value}); the token is shown only once:")
    print(issued.token)


@users_app.command("list")
def users_list(token: str | None = TOKEN_OPTION) -> None:
    """List users and roles (admin or auditor)."""
    from governance.auth import list_users

    with governance_errors():
        users = list_users(by=caller(token))
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

    with governance_errors():
        issued = rotate_token(name, by=caller(token))
    err.print(f"new token for {issued.user.name}; the old one no longer works. Shown only once:")
    print(issued.token)


@users_app.command("revoke")
def users_revoke(
    name: str = typer.Argument(..., help="User to revoke."), token: str | None = TOKEN_OPTION
) -> None:
    """Revoke a user's token at once (admin)."""
    from governance.auth import revoke_user

    with governance_errors():
        info = revoke_user(name, by=caller(token))
    out.print(f"revoked {info.name} ({info.role.value})")


# ---- policy -------------------------------------------------------------------------------


@policy_app.command("check")
def policy_check(
    path: Path | None = typer.Argument(None, help="Policy file (default: the one in force)."),
    model: str | None = typer.Option(None, "--model", help="Show the effective policy for this model."),
) -> None:
    """Validate a policy file and print the effective policy."""
    from governance.policy import default_policy_path, load_policy

    with governance_errors():
        policy = load_policy(path)
        effective = policy.for_model(model) if model else policy.default
    out.print(f"valid: {path or default_policy_path()} (sha256 {policy.sha256[:16]})")
    print(json.dumps(effective.model_dump(mode="json"), indent=2))


@policy_app.command("sign")
def policy_sign(
    path: Path | None = typer.Argument(None, help="Policy file (default: the one in force)."),
) -> None:
    """Sign the policy in force (admin, audited): the gate refuses any policy whose hash is not
    the newest signed one. The token comes from RADGATE_TOKEN or RADGATE_TOKEN_FILE."""
    from governance.approvals.policy_record import sign_policy
    from governance.audit import AuditLog
    from governance.policy import default_policy_path, load_policy

    with governance_errors():
        policy = load_policy(path)
        entry = sign_policy(AuditLog(), caller(None), policy)
    out.print(f"signed {path or default_policy_path()} (sha256 {policy.sha256}) in audit entry {entry.seq}")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    from governance.cli.audit import audit_app
    from governance.cli.model import model_app

    app.add_typer(audit_app, name="audit")
    app.add_typer(model_app, name="model")
    app.add_typer(policy_app, name="policy")
