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


@audit_app.command("forward")
def audit_forward(
    syslog: str | None = typer.Option(
        None,
        "--syslog",
        help="Audit repository: udp://, tcp:// or tls://HOST:PORT (DICOM A.5 XML, RFC 5424).",
    ),
    fhir: str | None = typer.Option(
        None, "--fhir", help="FHIR R4 base URL: entries as AuditEvents (token from RADGATE_FHIR_TOKEN)."
    ),
    ca_file: Path | None = typer.Option(None, "--ca", help="CA of the TLS syslog or FHIR server."),
    certificate: Path | None = typer.Option(None, "--cert", help="Client certificate (mutual TLS syslog)."),
    key: Path | None = typer.Option(None, "--key", help="Client private key (mutual TLS syslog)."),
    source_id: str = typer.Option("radgate", help="AuditSourceID of the messages."),
    site: str | None = typer.Option(None, help="AuditEnterpriseSiteID of the messages."),
    include_details: bool = typer.Option(False, help="Also send each entry's details (default: kept local)."),
    follow: bool = typer.Option(False, "--follow", help="Keep forwarding new entries until stopped."),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Send the chain's entries after the last one delivered to an ATNA audit repository and/or a
    FHIR server (auditor or admin). Nothing is dropped: what fails stays queued for the next run."""
    import os
    import signal
    import threading

    from governance.audit.atna import (
        AtnaProfile,
        SyslogDestination,
        SyslogError,
        fhir_audit_exporter,
        syslog_exporter,
    )
    from governance.auth import require_role

    if syslog is None and fhir is None:
        raise fail("give --syslog and/or --fhir")
    profile = AtnaProfile(source_id, site, include_details)
    with governance_errors():
        require_role(caller(token), *AUDIT_ROLES)
        exporters = []
        try:
            if syslog is not None:
                destination = SyslogDestination.parse(
                    syslog, ca_file=ca_file, client_cert=certificate, client_key=key
                )
                exporters.append(syslog_exporter(destination, profile))
        except SyslogError as exc:
            raise fail(str(exc)) from exc
        if fhir is not None:
            exporters.append(
                fhir_audit_exporter(
                    fhir,
                    token=os.environ.get("RADGATE_FHIR_TOKEN"),
                    ca_file=str(ca_file) if ca_file else None,
                    profile=profile,
                )
            )
        if follow:
            running = [exporter.start() for exporter in exporters]
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
            for _, event in running:
                event.set()
            return
        reports = [(exporter.name, exporter.pump()) for exporter in exporters]
    for name, report in reports:
        print(
            json.dumps(
                {"exporter": name, "sent": report.sent, "backlog": report.backlog, "error": report.error}
            )
        )
    if any(report.error for _, report in reports):
        raise typer.Exit(1)
