"""Governance commands: ``users``, ``audit``, ``model`` (approval workflow) and ``policy``.

The caller's token comes from ``--token`` or ``RADGATE_TOKEN``. Exit codes: 1 refused by the
workflow or policy, 2 bad input, 3 not authenticated, 4 role not allowed, 5 audit chain broken.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from governance.auth import Principal
    from governance.policy import Checklist

__all__ = ["register"]

err = Console(stderr=True)
out = Console()

users_app = typer.Typer(help="Users, roles and tokens.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
model_app = typer.Typer(help="Approval workflow on the MLflow registry.", no_args_is_help=True)
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


@users_app.command("revoke")
def users_revoke(
    name: str = typer.Argument(..., help="User to revoke."), token: str | None = TOKEN_OPTION
) -> None:
    """Revoke a user's token at once (admin)."""
    from governance.auth import revoke_user

    with _errors():
        info = revoke_user(name, by=_principal(token))
    out.print(f"revoked {info.name} ({info.role.value})")


# ---- audit --------------------------------------------------------------------------------

AUDIT_ROLES = ("auditor", "admin")


@audit_app.command("list")
def audit_list(
    actor: str | None = typer.Option(None, help="Only this actor."),
    action: str | None = typer.Option(None, help="Action prefix, e.g. model. or reid."),
    target: str | None = typer.Option(None, help="Target prefix, e.g. model:cxr/."),
    since: str | None = typer.Option(None, help="ISO date or time (UTC), inclusive."),
    until: str | None = typer.Option(None, help="ISO date or time (UTC), exclusive."),
    limit: int = typer.Option(50, help="Most recent N entries (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Show audit entries, newest last (auditor or admin)."""
    from governance.audit import AuditLog
    from governance.auth import require_role

    with _errors():
        require_role(_principal(token), *AUDIT_ROLES)
        entries = AuditLog().entries(
            actor=actor,
            action=action,
            target_prefix=target,
            since=since,
            until=until,
            limit=limit or None,
            newest_first=True,
        )
    entries.reverse()
    if as_json:
        for entry in entries:
            print(entry.to_json())
        return
    table = Table("seq", "time (UTC)", "actor", "role", "action", "target", "details", "hash")
    for e in entries:
        table.add_row(
            str(e.seq),
            e.ts[:19],
            e.actor,
            e.role,
            e.action,
            e.target,
            json.dumps(e.details, sort_keys=True),
            e.hash[:12],
        )
    out.print(table)


@audit_app.command("verify")
def audit_verify(
    anchor: list[Path] = typer.Option([], "--anchor", help="Head files written by `audit anchor` to check."),
    accept_key_id: list[str] = typer.Option(
        [], "--accept-key-id", help="Key id of a previous project key whose entries are accepted unchecked."
    ),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Recompute the chain; name the first altered, inserted, deleted or reordered entry."""
    from governance.audit import AuditLog
    from governance.auth import require_role

    with _errors():
        principal = require_role(_principal(token), *AUDIT_ROLES)
        log = AuditLog()
        report = log.verify(anchors=list(anchor), accept_key_ids=list(accept_key_id))
        log.append(
            principal.name,
            "audit.verify",
            "audit:log",
            {
                "ok": report.ok,
                "entries": report.entries,
                "problem": report.problem,
                "first_bad_seq": report.first_bad_seq,
            },
            role=principal.role.value,
        )
    if not report.ok:
        raise _fail(
            f"audit chain broken: {report.problem} at entry {report.first_bad_seq}: {report.detail}", 5
        )
    note = (
        f" ({report.unchecked_macs} entries under an older key not MAC-checked)"
        if report.unchecked_macs
        else ""
    )
    out.print(f"ok: {report.entries} entries, head {report.head_seq} {report.head_hash}{note}")


@audit_app.command("export")
def audit_export(
    since: str | None = typer.Option(None, help="ISO date or time (UTC)."),
    output: Path | None = typer.Option(None, "--out", help="File to write (default: stdout)."),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Write entries as JSON lines (auditor or admin)."""
    from governance.audit import AuditLog
    from governance.auth import require_role

    with _errors():
        principal = require_role(_principal(token), *AUDIT_ROLES)
        log = AuditLog()
        if output is None:
            count = log.export(sys.stdout, since=since)
        else:
            with output.open("w") as handle:
                count = log.export(handle, since=since)
        log.append(
            principal.name,
            "audit.export",
            "audit:log",
            {"entries": count, "since": since},
            role=principal.role.value,
        )
    err.print(f"exported {count} entries")


@audit_app.command("anchor")
def audit_anchor(
    to: Path = typer.Option(..., "--to", help="File to write the head (seq, hash) to, outside the database."),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Anchor the current head outside the database so that truncation is detected."""
    from governance.audit import AuditLog
    from governance.auth import require_role

    with _errors():
        principal = require_role(_principal(token), *AUDIT_ROLES)
        log = AuditLog()
        anchor = log.anchor_to_file(to)
    out.print(f"anchored entry {anchor['seq']} {anchor['hash']} to {to}")
    with _errors():
        log.append(
            principal.name,
            "audit.anchor",
            "audit:log",
            {"seq": anchor["seq"], "hash": anchor["hash"]},
            role=principal.role.value,
        )


# ---- model --------------------------------------------------------------------------------


def _print_checklist(checklist: Checklist) -> None:
    table = Table(
        "",
        "requirement",
        "value",
        "expected",
        "detail",
        title=f"{checklist.name} v{checklist.version}: {checklist.status}",
    )
    for item in checklist.items:
        mark = "[green]PASS[/green]" if item.passed else "[red]FAIL[/red]"
        value = item.value if not isinstance(item.value, list) else ", ".join(map(str, item.value)) or "-"
        table.add_row(mark, item.name, "-" if value is None else str(value), item.expected, item.detail)
    out.print(table)


def _step(step: str, name: str, version: str, comment: str, token: str | None) -> None:
    from governance.approvals import Workflow

    with _errors():
        principal = _principal(token)
        outcome = getattr(Workflow(), step)(principal, name, version, comment)
    out.print(
        f"{step}: {name} v{version} by {principal.name} ({principal.role.value}), audit #{outcome.audit_seq}"
    )
    _print_checklist(outcome.checklist)


NAME_ARG = typer.Argument(..., help="Registered model name.")
VERSION_ARG = typer.Argument(..., help="Model version.")
COMMENT_OPTION = typer.Option("", "--comment", "-m", help="Comment stored with the decision in MLflow.")


@model_app.command("submit")
def model_submit(
    name: str = NAME_ARG,
    version: str = VERSION_ARG,
    comment: str = COMMENT_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Submit a version for review, recording its artifact hash (ml-engineer)."""
    _step("submit", name, version, comment, token)


@model_app.command("approve")
def model_approve(
    name: str = NAME_ARG,
    version: str = VERSION_ARG,
    comment: str = COMMENT_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Approve a submitted version (a role the policy requires; never the submitter)."""
    _step("approve", name, version, comment, token)


@model_app.command("reject")
def model_reject(
    name: str = NAME_ARG,
    version: str = VERSION_ARG,
    comment: str = COMMENT_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Reject a submitted version (a reviewer role; a later approval by the same person replaces it)."""
    _step("reject", name, version, comment, token)


@model_app.command("revoke")
def model_revoke(
    name: str = NAME_ARG,
    version: str = VERSION_ARG,
    comment: str = COMMENT_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Revoke a version for good and remove its aliases (clinical-reviewer, ml-engineer, admin)."""
    _step("revoke", name, version, comment, token)


@model_app.command("promote")
def model_promote(
    name: str = NAME_ARG,
    version: str = VERSION_ARG,
    alias: str = typer.Option("production", "--alias", help="Serving alias allowed by the policy."),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Set a serving alias, only if the policy holds now (ml-engineer or admin)."""
    from governance.approvals import PolicyNotSatisfied, Workflow

    with _errors():
        principal = _principal(token)
        try:
            outcome = Workflow().promote(principal, name, version, alias)
        except PolicyNotSatisfied as exc:
            _print_checklist(exc.checklist)
            raise _fail(str(exc), 1) from exc
    out.print(f"promoted {name} v{version} to @{alias} (audit #{outcome.audit_seq})")


@model_app.command("status")
def model_status(
    name: str = NAME_ARG,
    version: str = VERSION_ARG,
    as_json: bool = typer.Option(False, "--json", help="Print the checklist as JSON."),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Show the policy evaluation, requirement by requirement (any user)."""
    from governance.approvals import Workflow

    with _errors():
        _principal(token)
        checklist = Workflow().status(name, version)
    if as_json:
        print(json.dumps(checklist.to_dict(), indent=2, default=str))
    else:
        _print_checklist(checklist)
        if not checklist.passed:
            err.print("next: " + "; ".join(f"{i.name} ({i.expected})" for i in checklist.failures))


@model_app.command("gate")
def model_gate(
    name: str = NAME_ARG,
    alias: str | None = typer.Option(None, "--alias", help="Alias to check."),
    version: str | None = typer.Option(None, "--version", help="Pinned version to check instead."),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Ask the serving gate: allowed or denied, with reasons (exit 1 when denied)."""
    from governance.approvals import gate

    with _errors():
        _principal(token)
        if (alias is None) == (version is None):
            raise ValueError("give exactly one of --alias or --version")
        decision = gate(name, alias, version=version, fresh=True)
    print(json.dumps(decision.to_dict(), indent=2))
    if not decision.allowed:
        raise typer.Exit(1)


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
    app.add_typer(audit_app, name="audit")
    app.add_typer(model_app, name="model")
    app.add_typer(policy_app, name="policy")
