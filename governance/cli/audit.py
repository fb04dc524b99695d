"""``radgate audit``: list, verify, export and anchor the hash-chained audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from governance.cli_support import TOKEN_OPTION, caller, err, fail, governance_errors, out

__all__ = ["audit_app"]

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


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

    with governance_errors():
        require_role(caller(token), *AUDIT_ROLES)
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
    mlflow_anchor: bool = typer.Option(
        False, "--mlflow-anchor", help="Also check the head anchored in MLflow."
    ),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Recompute the chain; name the first altered, inserted, deleted or reordered entry."""
    from governance.audit import AuditLog
    from governance.auth import require_role

    with governance_errors():
        principal = require_role(caller(token), *AUDIT_ROLES)
        log = AuditLog()
        report = log.verify(
            anchors=list(anchor), accept_key_ids=list(accept_key_id), mlflow_anchor=mlflow_anchor
        )
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
        raise fail(
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

    with governance_errors():
        principal = require_role(caller(token), *AUDIT_ROLES)
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
    to: Path | None = typer.Option(None, "--to", help="File to write the head (seq, hash) to."),
    mlflow: bool = typer.Option(
        False, "--mlflow", help="Also record the head in MLflow (experiment radgate-audit)."
    ),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Anchor the current head outside the database so that truncation is detected."""
    from governance.audit import AuditLog
    from governance.auth import require_role

    with governance_errors():
        principal = require_role(caller(token), *AUDIT_ROLES)
        if to is None and not mlflow:
            raise ValueError("give --to PATH and/or --mlflow")
        log = AuditLog()
        anchor: dict[str, object] = {}
        if to is not None:
            anchor = log.anchor_to_file(to)
            out.print(f"anchored entry {anchor['seq']} {anchor['hash']} to {to}")
        if mlflow:
            anchor = log.anchor_to_mlflow()
            out.print(f"anchored entry {anchor['seq']} {anchor['hash']} in MLflow")
        log.append(
            principal.name,
            "audit.anchor",
            "audit:log",
            {"seq": anchor["seq"], "hash": anchor["hash"], "file": to is not None, "mlflow": mlflow},
            role=principal.role.value,
        )
