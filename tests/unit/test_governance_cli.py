"""The governance commands end to end through Typer: users, model workflow, audit."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from governance.approvals import registry_client
from governance.cli import register
from governance.settings import get_settings
from governance.testing import GOOD_METRICS, copy_store, create_version

NAME = "cxr"


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-cli") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.delenv("RADGATE_TOKEN", raising=False)
    app = typer.Typer()
    register(app)
    return app


def _run(app: typer.Typer, *args: str, token: str | None = None, code: int = 0) -> str:
    env = {"RADGATE_TOKEN": token} if token else {}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, (args, result.output)
    assert "Traceback" not in result.output
    return result.output


def test_users_bootstrap_add_list_revoke(cli: typer.Typer) -> None:
    admin = _run(cli, "users", "add", "root", "--role", "admin").strip().splitlines()[-1]
    assert admin.startswith("rg_")
    assert "an admin token is required" in _run(cli, "users", "add", "x", "--role", "admin", code=4)
    eng = _run(cli, "users", "add", "eve", "--role", "ml-engineer", token=admin).strip().splitlines()[-1]
    assert "unknown role" in _run(cli, "users", "add", "bob", "--role", "wizard", token=admin, code=2)
    assert "needs role" in _run(cli, "users", "add", "bob", "--role", "auditor", token=eng, code=4)
    listing = _run(cli, "users", "list", token=admin)
    assert "eve" in listing and "ml-engineer" in listing and eng not in listing
    _run(cli, "users", "revoke", "eve", token=admin)
    assert "revoked" in _run(cli, "users", "list", "--token", eng, code=3)
    assert "no token" in _run(cli, "users", "list", code=3)


def test_model_workflow_and_audit_commands(
    cli: typer.Typer, mlflow_template: Path, radgate_home: Path
) -> None:
    copy_store(mlflow_template, radgate_home)
    version, _ = create_version(registry_client(), NAME, metrics={**GOOD_METRICS, "test_auroc": 0.5})
    admin = _run(cli, "users", "add", "root", "--role", "admin").strip().splitlines()[-1]
    tokens = {
        name: _run(cli, "users", "add", name, "--role", role, token=admin).strip().splitlines()[-1]
        for name, role in [
            ("eng", "ml-engineer"),
            ("eng2", "ml-engineer"),
            ("doc", "clinical-reviewer"),
            ("aud", "auditor"),
        ]
    }
    status = _run(cli, "model", "status", NAME, version, token=tokens["doc"])
    assert "not-submitted" in status and "FAIL" in status
    _run(cli, "model", "submit", NAME, version, "-m", "v1", token=tokens["eng"])
    assert "may not approve" in _run(cli, "model", "approve", NAME, version, token=tokens["eng"], code=4)
    assert "needs role" in _run(cli, "model", "approve", NAME, version, token=tokens["aud"], code=4)
    _run(cli, "model", "approve", NAME, version, "-m", "ok", token=tokens["doc"])
    _run(cli, "model", "approve", NAME, version, token=tokens["eng2"])
    refused = _run(
        cli, "model", "promote", NAME, version, "--alias", "production", token=tokens["eng"], code=1
    )
    assert "test_auroc" in refused and "policy not satisfied" in refused
    assert '"allowed": false' in _run(
        cli, "model", "gate", NAME, "--version", version, token=tokens["aud"], code=1
    )
    listing = _run(cli, "model", "list", token=tokens["aud"])
    assert "cxr" in listing and "pending" in listing
    _run(cli, "model", "revoke", NAME, version, "-m", "poor AUROC", token=tokens["doc"])
    assert "revoked" in _run(cli, "model", "list", NAME, token=tokens["aud"])
    assert "revoked" in _run(cli, "model", "status", NAME, version, "--json", token=tokens["eng"])

    assert "needs role" in _run(cli, "audit", "list", token=tokens["eng"], code=4)
    listing = _run(cli, "audit", "list", "--action", "model.", "--json", token=tokens["aud"])
    actions = [line.split('"action": "')[1].split('"')[0] for line in listing.splitlines()]
    assert actions == [
        "model.submit",
        "model.approve.refused",  # the submitter tried to approve
        "model.approve.refused",  # the auditor tried to approve
        "model.approve",
        "model.approve",
        "model.promote.refused",  # the policy did not hold
        "model.revoke",
    ]
    assert "ok: " in _run(cli, "audit", "verify", token=tokens["aud"])
    anchor = radgate_home.parent / "anchor.json"
    _run(cli, "audit", "anchor", "--to", str(anchor), "--mlflow", token=tokens["aud"])
    assert "ok: " in _run(cli, "audit", "verify", "--mlflow-anchor", token=tokens["aud"])
    out = radgate_home.parent / "audit.jsonl"
    _run(cli, "audit", "export", "--since", "2000-01-01", "--out", str(out), token=tokens["aud"])
    assert len(out.read_text().splitlines()) > 10

    db = sqlite3.connect(get_settings().home / "catalog.db", isolation_level=None)
    db.execute("UPDATE audit_log SET actor='mallory' WHERE action='model.revoke'")
    broken = _run(cli, "audit", "verify", "--anchor", str(anchor), token=tokens["aud"], code=5)
    assert "altered" in broken
    db.execute("UPDATE audit_log SET actor='doc' WHERE action='model.revoke'")  # undo
    anchored = json.loads(anchor.read_text())["seq"]
    db.execute("DELETE FROM audit_log WHERE seq >= ?", (anchored,))
    (radgate_home / "audit" / "head.json").unlink()
    truncated = _run(cli, "audit", "verify", "--mlflow-anchor", token=tokens["aud"], code=5)
    assert "truncated" in truncated


def test_policy_check(cli: typer.Typer, tmp_path: Path) -> None:
    assert "valid" in _run(cli, "policy", "check")
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\ndefault: {approvals: []}\n")
    assert "invalid policy" in _run(cli, "policy", "check", str(bad), code=2)


def test_authorize_cli_for_other_packages_commands() -> None:
    from governance.auth import Role, add_user
    from governance.cli_support import TOKEN_OPTION, authorize_cli

    app = typer.Typer()

    @app.command()
    def ingest(token: str | None = TOKEN_OPTION) -> None:
        """A command of another package that needs the pacs-client or data-steward role."""
        who = authorize_cli(token, Role.PACS_CLIENT, Role.DATA_STEWARD)
        print(f"hello {who.name}")

    @app.command()
    def other() -> None:
        """Typer needs two commands to keep names."""

    admin = add_user("root", Role.ADMIN, by=None)
    from governance.auth import authenticate

    steward = add_user("ds", Role.DATA_STEWARD, by=authenticate(admin.token)).token
    assert "hello ds" in _run(app, "ingest", token=steward)
    assert "needs role" in _run(app, "ingest", token=admin.token, code=4)
    assert "no token" in _run(app, "ingest", code=3)


def test_every_role_boundary_of_the_admin_and_audit_commands(cli: typer.Typer) -> None:
    from governance.testing import create_cast

    cast = create_cast()
    allowed = {
        ("users", "list"): {"admin", "auditor"},
        ("audit", "verify"): {"admin", "auditor"},
        ("audit", "list"): {"admin", "auditor"},
        ("audit", "export"): {"admin", "auditor"},
        ("users", "revoke", "nobody"): {"admin"},
    }
    for command, roles in allowed.items():
        for who, token in cast.tokens.items():
            role_ok = cast[who].role.value in roles
            expected = (1 if command[-1] == "nobody" else 0) if role_ok else 4  # unknown user -> 1
            _run(cli, *command, token=token, code=expected)


def test_webhook_commands_need_a_secret_and_admin(cli: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    from governance.testing import create_cast

    monkeypatch.delenv("RADGATE_WEBHOOK_SECRET", raising=False)
    assert "secret is required" in _run(cli, "model", "webhook", "serve", code=2)
    cast = create_cast()
    url = "http://127.0.0.1:9/mlflow/webhook"
    _run(cli, "model", "webhook", "register", "--url", url, token=cast.tokens["eng"], code=4)
    assert "RADGATE_WEBHOOK_SECRET" in _run(
        cli, "model", "webhook", "register", "--url", url, token=cast.tokens["admin"], code=2
    )
