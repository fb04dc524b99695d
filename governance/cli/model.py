"""``radgate model``: the approval workflow on MLflow, the gate, and registry webhooks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from governance.cli_support import TOKEN_OPTION, caller, err, fail, governance_errors, out
from governance.tags import Tag

if TYPE_CHECKING:
    from governance.policy import Checklist

__all__ = ["model_app"]

model_app = typer.Typer(help="Approval workflow on the MLflow registry.", no_args_is_help=True)


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

    with governance_errors():
        principal = caller(token)
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

    with governance_errors():
        principal = caller(token)
        try:
            outcome = Workflow().promote(principal, name, version, alias)
        except PolicyNotSatisfied as exc:
            _print_checklist(exc.checklist)
            raise fail(str(exc), 1) from exc
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

    with governance_errors():
        caller(token)
        workflow = Workflow()
        checklist = workflow.status(name, version)
        history = workflow.history(name, version)
    if as_json:
        print(json.dumps({**checklist.to_dict(), "history": history}, indent=2, default=str))
    else:
        _print_checklist(checklist)
        if history:
            table = Table("#", "time (UTC)", "who", "role", "step", "artifact", "comment", title="history")
            for h in history:
                step = str(h["action"]) + (f" @{h['alias']}" if h["alias"] else "")
                who = str(h["actor"]) + ("" if h["authentic"] else " [red](NOT AUTHENTIC)[/red]")
                table.add_row(
                    str(h["seq"]),
                    str(h["at"])[:19],
                    who,
                    str(h["role"]),
                    step,
                    str(h["artifact_sha256"] or "")[:12],
                    str(h["comment"]),
                )
            out.print(table)
        if not checklist.passed:
            err.print("next: " + "; ".join(f"{i.name} ({i.expected})" for i in checklist.failures))


@model_app.command("list")
def model_list(
    name: str | None = typer.Argument(None, help="Registered model (default: all)."),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Versions with their review status and aliases: the reviewers' queue (any user).

    The status column is MLflow's ``radgate.status`` tag (a mirror); ``model status`` evaluates.
    """
    from governance.approvals import registry_client

    with governance_errors():
        caller(token)
        client = registry_client()
        query = f"name = '{name}'" if name else ""
        versions = client.search_model_versions(query, max_results=1000)
    table = Table("model", "version", "status", "aliases", "created (UTC)")
    for mv in sorted(versions, key=lambda v: (v.name, int(v.version))):
        created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
        status = (mv.tags or {}).get(Tag.STATUS, "not submitted")
        table.add_row(mv.name, str(mv.version), status, ", ".join(mv.aliases or []), created[:19])
    out.print(table)


@model_app.command("gate")
def model_gate(
    name: str = NAME_ARG,
    alias: str | None = typer.Option(None, "--alias", help="Alias to check."),
    version: str | None = typer.Option(None, "--version", help="Pinned version to check instead."),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Ask the serving gate: allowed or denied, with reasons (exit 1 when denied)."""
    from governance.approvals import gate

    with governance_errors():
        caller(token)
        if (alias is None) == (version is None):
            raise ValueError("give exactly one of --alias or --version")
        decision = gate(name, alias, version=version, fresh=True)
    print(json.dumps(decision.to_dict(), indent=2))
    if not decision.allowed:
        raise typer.Exit(1)


webhook_app = typer.Typer(
    help="MLflow registry webhooks: catch aliases set outside RadGate.", no_args_is_help=True
)
model_app.add_typer(webhook_app, name="webhook")


@webhook_app.command("serve")
def webhook_serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8765, help="Port to listen on."),
    enforce: bool = typer.Option(True, "--enforce/--report-only", help="Delete invalid aliases (default)."),
) -> None:
    """Receive MLflow webhooks (secret from RADGATE_WEBHOOK_SECRET); runs until stopped."""
    import uvicorn

    from governance.approvals.webhooks import WebhookSignatureError, create_webhook_app

    try:
        app = create_webhook_app(enforce=enforce)
    except WebhookSignatureError as exc:
        raise fail(str(exc), 2) from exc
    uvicorn.run(app, host=host, port=port, log_level="warning")


@webhook_app.command("register")
def webhook_register(
    url: str = typer.Option(
        ..., "--url", help="Public URL of `radgate model webhook serve` (.../mlflow/webhook)."
    ),
    token: str | None = TOKEN_OPTION,
) -> None:
    """Register the receiver with the MLflow tracking server (admin; secret from RADGATE_WEBHOOK_SECRET)."""
    import os

    from governance.approvals.webhooks import WEBHOOK_SECRET_ENV, register_webhook
    from governance.auth import Role, require_role

    with governance_errors():
        principal = require_role(caller(token), Role.ADMIN)
        secret = os.environ.get(WEBHOOK_SECRET_ENV)
        if not secret:
            raise ValueError(f"set {WEBHOOK_SECRET_ENV} to the shared secret")
        hook_id = register_webhook(url, secret)
        from governance.audit import record

        record(
            principal.name,
            "webhook.register",
            f"webhook:{hook_id}",
            {"events": ["model_version_alias.created"]},
            role=principal.role.value,
        )
    out.print(f"registered webhook {hook_id} -> {url}")
