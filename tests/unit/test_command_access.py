"""Every ``radgate`` command checks the role it needs (governance/auth/access.py), both ways.

The matrix is exercised on a mirror app (same command paths, callbacks that only record who
ran them) so that no heavy work runs; the real app is checked to be guarded command by command,
and a few real commands are refused before any side effect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from governance.auth import COMMAND_ACCESS, AccessMode, Role, acting_principal, revoke_user
from governance.cli.guard import command_paths, guard_typer_app
from governance.settings import get_settings
from governance.testing import Cast, create_cast
from radgate.cli import app as radgate_app

REPO = Path(__file__).resolve().parents[2]
MEMBER = {
    Role.ADMIN: "admin",
    Role.DATA_STEWARD: "steward",
    Role.ML_ENGINEER: "eng",
    Role.CLINICAL_REVIEWER: "doc",
    Role.PACS_CLIENT: "pacs",
    Role.HONEST_BROKER: "broker",
    Role.AUDITOR: "auditor",
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Cast]:
    """One catalog and cast for the whole module (a revoked ml-engineer ``gone`` included)."""
    from governance.auth import add_user

    home = tmp_path_factory.mktemp("access") / "radgate-home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RADGATE_HOME", str(home))
        env.setenv("RADGATE_PROJECT_KEY", "11" * 32)
        get_settings.cache_clear()
        cast = create_cast()
        cast.tokens["gone"] = add_user("gone", Role.ML_ENGINEER, by=cast["admin"]).token
        revoke_user("gone", by=cast["admin"])
    get_settings.cache_clear()
    return home, cast


@pytest.fixture(autouse=True)
def radgate_home(shared: tuple[Path, Cast], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The module's shared home instead of a fresh one per test (catalog + cast once)."""
    monkeypatch.setenv("RADGATE_HOME", str(shared[0]))
    monkeypatch.setenv("RADGATE_PROJECT_KEY", "11" * 32)
    for name in ("RADGATE_CATALOG_URL", "RADGATE_TOKEN", "RADGATE_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield shared[0]
    get_settings.cache_clear()


@pytest.fixture
def cast(shared: tuple[Path, Cast]) -> Cast:
    return shared[1]


def _mirror(*paths: str) -> tuple[typer.Typer, list[tuple[str, str]]]:
    """A guarded app with these command paths of the table; each records who ran it."""
    ran: list[tuple[str, str]] = []
    root = typer.Typer()
    groups: dict[tuple[str, ...], typer.Typer] = {(): root}

    @root.callback()
    def _root() -> None:
        pass

    for path in paths:
        *parents, leaf = path.split()
        parent = root
        for depth in range(1, len(parents) + 1):
            key = tuple(parents[:depth])
            if key not in groups:
                groups[key] = typer.Typer()
                parent.add_typer(groups[key], name=key[-1])
            parent = groups[key]

        def run(path: str = path) -> None:
            who = acting_principal()
            ran.append((path, who.role.value if who else ""))

        parent.command(leaf)(run)
    return guard_typer_app(root), ran


def _invoke(app: typer.Typer, path: str, token: str | None) -> Any:
    env = {"RADGATE_TOKEN": token} if token else {}
    return CliRunner().invoke(app, path.split(), env=env)


def test_every_command_of_radgate_is_in_the_table_and_guarded() -> None:
    paths = command_paths(radgate_app)
    missing = sorted(set(paths) - set(COMMAND_ACCESS))
    assert not missing, f"add these commands to COMMAND_ACCESS (governance/auth/access.py): {missing}"
    stale = sorted(set(COMMAND_ACCESS) - set(paths))
    assert not stale, f"COMMAND_ACCESS names commands that do not exist: {stale}"
    for path, info in _commands(radgate_app):
        assert getattr(info.callback, "__radgate_command__", None) == path, path
    click_app = typer.main.get_command(radgate_app)
    for path in paths:
        command: Any = click_app
        for name in path.split():
            command = command.commands[name]
        assert any("--token" in param.opts for param in command.params), f"{path} has no --token"
    # SELF: only commands that authenticate by themselves or touch no platform data
    assert [p for p, a in COMMAND_ACCESS.items() if a.mode is AccessMode.SELF] == ["certs dev", "demo"]
    assert [p for p, a in COMMAND_ACCESS.items() if a.mode is AccessMode.BOOTSTRAP] == ["users add"]


def _commands(app: typer.Typer) -> list[tuple[str, Any]]:
    from governance.cli.guard import _walk

    return _walk(app, ())


def test_the_readme_matrix_is_the_table() -> None:
    from governance.auth.access import matrix_markdown

    assert matrix_markdown() in (REPO / "governance" / "README.md").read_text(), (
        "replace the table under 'Who may run each command' in governance/README.md with the output of "
        '.venv/bin/python -c "from governance.auth.access import matrix_markdown; print(matrix_markdown())"'
    )


@pytest.mark.parametrize("path", [p for p, a in COMMAND_ACCESS.items() if a.mode is not AccessMode.SELF])
def test_role_boundaries_both_ways(path: str, cast: Cast) -> None:
    app, ran = _mirror(path)
    access = COMMAND_ACCESS[path]
    for role, member in MEMBER.items():
        result = _invoke(app, path, cast.tokens[member])
        allowed = access.mode is AccessMode.ANY_USER or role in access.roles
        if allowed:
            assert result.exit_code == 0, (path, role, result.output)
            assert ran[-1] == (path, role.value)
        else:
            assert result.exit_code == 4, (path, role, result.output)
            assert "needs role" in result.output and "Traceback" not in result.output
    calls = len(ran)
    for token, needle in [
        ("rg_" + "x" * 43, "unknown token"),
        ("not-a-token", "malformed token"),
        (cast.tokens["gone"], "revoked"),
    ]:
        result = _invoke(app, path, token)
        assert result.exit_code == 3 and needle in result.output, (path, result.output)
        assert token not in result.output
    missing = _invoke(app, path, None)
    if access.mode is AccessMode.BOOTSTRAP:  # users exist, so an admin token is required
        assert missing.exit_code == 4 and "admin token is required" in missing.output
    else:
        assert missing.exit_code == 3 and "no token" in missing.output
    assert len(ran) == calls, "a refused command must not run"


def test_token_option_and_token_file(cast: Cast, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, ran = _mirror("ingest", "audit verify")
    result = CliRunner().invoke(app, ["ingest", "--token", cast.tokens["steward"]])
    assert result.exit_code == 0 and ran[-1] == ("ingest", "data-steward")
    secret = tmp_path / "token"
    secret.write_text(cast.tokens["auditor"] + "\n")
    monkeypatch.setenv("RADGATE_TOKEN_FILE", str(secret))
    assert CliRunner().invoke(app, ["audit", "verify"]).exit_code == 0
    assert ran[-1] == ("audit verify", "auditor")
    assert CliRunner().invoke(app, ["ingest"]).exit_code == 4


def test_unlisted_command_is_refused(cast: Cast) -> None:
    app = typer.Typer()

    @app.command("brand-new")
    def brand_new() -> None:
        raise AssertionError("must not run")

    @app.command("other")
    def other() -> None:
        pass

    guard_typer_app(app)
    result = _invoke(app, "brand-new", cast.tokens["admin"])
    assert result.exit_code == 4 and "no entry in the access table" in result.output


def test_real_commands_refuse_before_side_effects(
    cast: Cast, tmp_path: Path, radgate_home: Path, write_file: Callable[[Path], None]
) -> None:
    from governance.audit import AuditLog

    inbox = tmp_path / "in"
    write_file(inbox / "a.dcm")
    out = tmp_path / "out"
    refused = _invoke(radgate_app, f"deid {inbox} {out}", cast.tokens["eng"])
    assert refused.exit_code == 4 and not out.exists()
    assert _invoke(radgate_app, f"deid {inbox} {out}", None).exit_code == 3 and not out.exists()
    denied = AuditLog().entries(action="deid.denied")
    assert denied and denied[-1].actor == "eng" and denied[-1].role == "ml-engineer"
    # an allowed caller gets past the guard; the run is audited under its name and role
    done = _invoke(radgate_app, f"ingest {inbox} --workers 1", cast.tokens["steward"])
    assert done.exit_code == 0, done.output
    run = AuditLog().entries(action="ingest.run")
    assert run and run[-1].actor == "steward" and run[-1].role == "data-steward"
    assert _invoke(radgate_app, "demo --stages nothing", None).exit_code == 2  # self-authenticating


@pytest.fixture
def write_file() -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not DICOM at all")  # quarantined by ingest, no PHI involved

    return write
