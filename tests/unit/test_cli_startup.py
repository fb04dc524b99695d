"""``radgate --help``, ``--version`` and the help of light commands import none of the heavy
libraries: each command imports what it needs when it runs (the start-up time itself is measured
by scripts/bench/cli_startup.py, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "torch",
    "scipy",
    "mlflow",
    "ray",
    "monai",
    "sqlalchemy",
    "pynetdicom",
    "pydicom",
    "fastapi",
    "numpy",
    "cryptography",
    "governance.settings",
    "governance.catalog",
    "governance.audit.log",
)

_PROBE = """
import contextlib, io, json, sys
from radgate.cli import app
with contextlib.redirect_stdout(io.StringIO()) as shown:
    try:
        app(sys.argv[1:], prog_name="radgate")
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "shown": shown.getvalue(), "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


def _probe(*argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{_PROBE}", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "argv",
    [("--help",), ("--version",), ("deid", "--help"), ("users", "--help"), ("audit", "verify", "--help")],
)
def test_help_and_version_import_no_heavy_library(argv: tuple[str, ...]) -> None:
    result = _probe(*argv)
    assert result["code"] == 0
    assert result["shown"], "the command printed nothing"
    assert result["heavy"] == []


def test_version_is_printed() -> None:
    result = _probe("--version")
    assert str(result["shown"]).startswith("radgate ")


def test_the_table_of_command_owners_is_what_each_module_registers() -> None:
    """``radgate.cli.main`` imports only the owners of the command it runs: the table it reads
    must name exactly the top-level commands and groups each module registers."""
    import importlib

    import typer

    from governance.cli.guard import command_paths
    from radgate.cli import COMMANDS_OF

    for module, names in COMMANDS_OF.items():
        alone = typer.Typer()
        alone.callback()(lambda: None)
        importlib.import_module(module).register(alone)
        assert {path.split()[0] for path in command_paths(alone)} == names, module


def test_a_command_is_built_from_its_owners_only() -> None:
    from radgate.cli import COMMANDS_OF, build_app, modules_for

    assert modules_for(["users", "list"]) == ("governance.cli",)
    assert modules_for(["-v", "audit", "verify"]) == ("governance.cli",)
    assert modules_for(["dataset", "report", "x"]) == ("imaging.dataset_cli", "imaging.quality.cli")
    assert modules_for(["--version"]) == ()
    everything = tuple(COMMANDS_OF)
    for argv in ([], ["--help"], ["no-such-command"], ["--verbose"]):
        assert modules_for(argv) == everything
    # The whole app and the apps built per command offer the same command paths.
    from governance.cli.guard import command_paths
    from radgate.cli import app

    whole = set(command_paths(app))
    per_command = set()
    for top in {path.split()[0] for path in whole}:
        per_command |= {p for p in command_paths(build_app(modules_for([top]))) if p.split()[0] == top}
    assert per_command == whole


def test_a_light_command_imports_only_its_own_commands() -> None:
    """``radgate users --help`` through the console script's entry point builds the governance
    commands only: no other package's command module is imported."""
    probe = (
        "import sys\n"
        "sys.argv = ['radgate', 'users', '--help']\n"
        "from radgate.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.endswith(('.cli', '_cli')) or m == 'radgate.demo'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "['governance.cli', 'radgate.cli']"


def test_the_collector_paused_for_start_up_runs_for_the_command_itself() -> None:
    """The console script pauses the cyclic garbage collector for start-up; the guard turns it
    on again once the caller is authenticated, before the command does its work."""
    import gc

    import typer
    from typer.testing import CliRunner

    from governance.cli.guard import guard_typer_app, pause_collector_until_authorized
    from governance.testing import create_cast

    cast = create_cast()
    seen: list[bool] = []
    audit = typer.Typer()
    audit.command("verify")(lambda: seen.append(gc.isenabled()))
    app = typer.Typer()
    app.callback()(lambda: None)
    app.add_typer(audit, name="audit")
    guarded = guard_typer_app(app)
    try:
        pause_collector_until_authorized()
        assert not gc.isenabled()
        result = CliRunner().invoke(guarded, ["audit", "verify", "--token", cast.tokens["auditor"]])
        assert result.exit_code == 0, result.output
        assert seen == [True] and gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
