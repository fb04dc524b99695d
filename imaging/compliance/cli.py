"""``radgate compliance check`` (once or periodically) and ``radgate erase --patient ...``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from governance.cli_support import fail
from governance.cli_support import out as console

if TYPE_CHECKING:
    from governance.auth import Principal

__all__ = ["register"]

compliance_app = typer.Typer(help="Compliance evidence: de-identification, keys, audit, approvals, tokens.")

_COLOURS = {"pass": "green", "warn": "yellow", "fail": "red"}


def _principal(token: str | None, role_hint: str) -> Principal:
    from governance.auth import AuthError, principal_from_env_or_token

    try:
        return principal_from_env_or_token(token)
    except AuthError as exc:
        raise fail(f"{exc} ({role_hint})") from None


def _interval(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise fail(f"invalid interval {text!r} (e.g. 30m, 24h)") from None


def _print(report_dict: dict[str, object]) -> None:
    table = Table(title=f"compliance check {report_dict['checked_at']}")
    for column in ("check", "status", "evidence", "supports"):
        table.add_column(column, overflow="fold")
    for check in report_dict["checks"]:  # type: ignore[attr-defined]
        status = check["status"]
        table.add_row(
            check["name"],
            f"[{_COLOURS[status]}]{status.upper()}[/]",
            check["summary"],
            "; ".join(check["safeguards"]),
        )
    console.print(table)
    status = str(report_dict["status"])
    console.print(
        f"overall: [{_COLOURS[status]}]{status.upper()}[/] (audit entry {report_dict['audit_seq']})"
    )


@compliance_app.command("check")
def check(
    sample: int | None = typer.Option(
        None, "--sample", min=0, help="Instances to re-scan (default from the thresholds file; 0 = all)."
    ),
    all_instances: bool = typer.Option(False, "--all", help="Re-scan every stored instance."),
    out: Path | None = typer.Option(None, "--out", help="JSON file (default RADGATE_HOME/compliance/...)."),
    as_of: str | None = typer.Option(None, "--as-of", help="Judge ages and approvals at this ISO date."),
    every: str | None = typer.Option(
        None, "--every", help="Periodic job: repeat at this interval (e.g. 24h) until interrupted."
    ),
    token: str | None = typer.Option(None, "--token", help="Auditor, admin or data-steward token."),
) -> None:
    """Is everything held still compliant? Pass/warn/fail per check with evidence; audited.

    Exit code 0 when nothing fails (warnings allowed), 1 when a check fails."""
    from governance.auth import AuthError
    from governance.settings import get_settings
    from imaging.compliance import ComplianceConfigError, run_compliance_check

    principal = _principal(token, "auditor, admin or data-steward")
    moment = None
    if as_of:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            raise fail(f"--as-of: not an ISO date {as_of!r}") from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    period = _interval(every) if every else None
    while True:
        try:
            report = run_compliance_check(principal, sample=0 if all_instances else sample, now=moment)
        except (AuthError, ComplianceConfigError) as exc:
            raise fail(str(exc)) from None
        data = report.to_dict()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = out or get_settings().home / "compliance" / f"check-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, default=str))
        _print(data)
        console.print(f"evidence: {path}")
        if period is None:
            raise typer.Exit(1 if str(report.status) == "fail" else 0)
        next_run = datetime.now(UTC) + timedelta(seconds=period)
        console.print(f"next check at {next_run.isoformat(timespec='seconds')}")
        time.sleep(period)


@compliance_app.command("erasures")
def erasures(
    token: str | None = typer.Option(None, "--token", help="Auditor, admin or honest-broker token."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List completed patient erasures (opaque ids, who, when, what was removed and flagged)."""
    from governance.auth import AuthError, Role, require_role
    from imaging.compliance import list_erasures

    principal = _principal(token, "auditor, admin or honest-broker")
    try:
        require_role(principal, Role.AUDITOR, Role.ADMIN, Role.HONEST_BROKER)
    except AuthError as exc:
        raise fail(str(exc)) from None
    rows = list_erasures()
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="patient erasures")
    for column in ("id", "when", "by", "co-signed", "instances", "datasets", "models flagged"):
        table.add_column(column)
    for row in rows:
        s = row["summary"]
        table.add_row(
            row["id"],
            str(row["created_at"])[:19],
            row["requested_by"],
            row["approved_by"],
            str(s.get("instances", 0)),
            str(s.get("dataset_versions", 0)),
            str(s.get("model_versions", 0)),
        )
    console.print(table)


def erase(
    patient: str = typer.Option(..., "--patient", help="The patient's ORIGINAL PatientID (never logged)."),
    reason: str = typer.Option("", "--reason", help="Why (e.g. the request reference); stored sealed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be erased and flagged."),
    request: bool = typer.Option(
        False, "--request", help="Ask for an admin's confirmation; prints the request id to confirm."
    ),
    confirmation: str | None = typer.Option(
        None, "--confirmation", help="Execute the request an admin confirmed (radgate erase-confirm ID)."
    ),
    token: str | None = typer.Option(None, "--token", help="Honest-broker token (or RADGATE_TOKEN)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Erase one patient (GDPR Art. 17): objects, quarantine, map entries and lineage; supersede
    dataset versions; flag models trained on them for review. The honest broker requests, an
    admin confirms with their own sign-in (erase-confirm), the broker executes; audited."""
    from governance.auth import AuthError
    from imaging.compliance import ErasureError, erase_patient, plan_erasure
    from imaging.compliance.cosign import CosignError, request_erasure

    principal = _principal(token, "honest-broker")
    try:
        if dry_run or request:
            plan = plan_erasure(patient, principal=principal)
            result = {"dry_run": True, **plan.to_dict()}
            if request:
                result["request_id"] = request_erasure(principal, plan.subject, reason)
                if not as_json:
                    console.print(f"erasure request {result['request_id']}: an admin confirms it with "
                                  f"`radgate erase-confirm {result['request_id']}`")  # fmt: skip
                    return
        else:
            if not confirmation:
                raise fail(
                    "an admin must co-sign: --request, then an admin runs erase-confirm, then --confirmation"
                )
            erasure_id, plan, superseded = erase_patient(
                patient, principal=principal, reason=reason, confirmation=confirmation
            )
            result = {"dry_run": False, "erasure_id": erasure_id, **plan.to_dict(), "superseded": superseded}
    except (ErasureError, AuthError, CosignError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        console.print_json(json.dumps(result, default=str))
        return
    verb = "would erase" if dry_run else "erased"
    console.print(
        f"{verb}: {len(result['instances'])} stored instance(s), "
        f"{len(result['quarantined_inputs'])} quarantined input(s), {result['map_entries']} map "
        f"entr(ies), {result['lineage_rows']} lineage row(s)"
    )
    for name, count in result["other_rows"].items():
        console.print(f"  {name}: {count} row(s)")
    for d in result["dataset_versions"]:
        console.print(f"dataset {d['name']}@{d['id'][:12]}: {d['items']} item(s) of this patient")
    for s in result.get("superseded", []):
        successor = s["successor"][:12] if s["successor"] else "none (empty)"
        console.print(f"  superseded {s['id'][:12]} -> {successor}")
    # Reports shorten an item to 16 characters: a clash errs towards "not flagged".
    unflagged = {u["item"] for u in result["unreadable"]}
    for m in result["model_versions"]:
        failed = f"{m['name']}/{m['version']}"[:16] in unflagged
        done = "NOT flagged: resolve by hand" if failed else "flagged radgate.erasure.review=required"
        console.print(
            f"model {m['name']} v{m['version']} trained on {m['dataset_version'][:12]}: "
            + ("would be flagged" if dry_run else done)
        )
    for u in result["unreadable"]:  # may be this patient's: a person resolves each
        console.print(f"[red]unresolved[/red] {u['store']} {u['item']}: {u['error']}")
    if not dry_run:
        console.print(f"erasure {result['erasure_id']} complete (subject {result['subject']})")


def erase_confirm(
    request_id: str = typer.Argument(..., help="The request id the honest broker's --request printed."),
) -> None:
    """Confirm an erasure request as the second approver (admin, signed in as yourself through
    RADGATE_TOKEN or RADGATE_TOKEN_FILE; audited)."""
    from governance.auth.access import acting_principal
    from imaging.compliance.cosign import CosignError, confirm_erasure

    principal = acting_principal() or _principal(None, "admin")
    try:
        confirm_erasure(principal, request_id)
    except CosignError as exc:
        raise fail(str(exc)) from None
    console.print(f"confirmed erasure request {request_id}; the honest broker may now execute it")


def register(app: typer.Typer) -> None:
    """Add ``compliance`` (sub-app), ``erase`` and ``erase-confirm`` to the ``radgate`` app."""
    app.add_typer(compliance_app, name="compliance")
    app.command("erase")(erase)
    app.command("erase-confirm")(erase_confirm)
