"""The ``radgate`` command: one Typer app composed of each package's subcommands.

Each package owns its commands in a ``cli`` module exposing ``register(app)``; heavy imports
(torch, ray, mlflow) happen inside the commands so that ``--help`` stays fast.

:func:`main` (the console script) builds the app from the modules that own the command it is
asked to run (``radgate users list`` imports the governance commands only); the help, the
version and anything it does not recognise get the whole app. ``radgate.cli.app`` is the whole
app, built on first use.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import typer

from governance.cli.guard import guard_typer_app, pause_collector_until_authorized
from governance.cli_support import exit_code
from radgate import __version__

if TYPE_CHECKING:
    app: typer.Typer

__all__ = ["app", "build_app", "main"]

# Order is the order of the pipeline; each module registers its own commands.
_COMMAND_MODULES = (
    "imaging.cli",
    "imaging.gateway.cli",
    "imaging.compliance.cli",
    "imaging.dataset_cli",
    "imaging.quality.cli",  # after imaging.dataset_cli: adds `report` to its `dataset` group
    "training.cli",
    "training.explain.cli",
    "governance.cli",
    "governance.cli.certs",
    "serving.cli",
    "serving.monitoring.cli",
    "serving.ui.cli",
    "serving.keys_cli",
    "radgate.demo",
)

#: The top-level commands and groups each module registers (tests/unit/test_cli_startup.py
#: holds this equal to what ``register`` really adds). Importing a module costs its own
#: compilation and imports; a command only needs the modules that register it.
COMMANDS_OF: Mapping[str, frozenset[str]] = {
    "imaging.cli": frozenset({"deid", "ingest", "catalog", "reid"}),
    "imaging.gateway.cli": frozenset({"gateway", "pull", "push"}),
    "imaging.compliance.cli": frozenset({"compliance", "erase", "erase-confirm"}),
    "imaging.dataset_cli": frozenset({"dataset"}),
    "imaging.quality.cli": frozenset({"dataset"}),
    "training.cli": frozenset({"demo-data", "train"}),
    "training.explain.cli": frozenset({"explain", "explain-sanity", "explain-segmentation"}),
    "governance.cli": frozenset({"users", "audit", "model", "policy"}),
    "governance.cli.certs": frozenset({"certs"}),
    "serving.cli": frozenset({"serve", "serve-ae", "predict", "triton"}),
    "serving.monitoring.cli": frozenset({"monitor", "feedback", "retrain"}),
    "serving.ui.cli": frozenset({"ui"}),
    "serving.keys_cli": frozenset({"keys"}),
    "radgate.demo": frozenset({"demo"}),
}

# Options of the root command that take no value and may stand before the command's name.
_ROOT_FLAGS = frozenset({"-v", "--verbose"})


def _version(value: bool) -> None:
    if value:
        typer.echo(f"radgate {__version__}")
        raise typer.Exit()


def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def build_app(modules: Iterable[str] = _COMMAND_MODULES) -> typer.Typer:
    """The ``radgate`` app with the commands of ``modules`` (in the order given), each one
    guarded: it authenticates and checks its role (governance/auth/access.py) before it runs."""
    built = typer.Typer(
        name="radgate",
        help="RadGate: DICOM de-identification, training, explanations, approvals and serving.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    built.callback()(_root)
    for module in modules:
        try:
            importlib.import_module(module).register(built)
        except ModuleNotFoundError as exc:  # a package not built yet in this checkout
            if exc.name is None or not (module + ".").startswith(exc.name + "."):
                raise
    return guard_typer_app(built)


def modules_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The command modules ``radgate ARGV`` needs: none for ``--version``, the owners of the
    command it names, and every module for the help, no command, or a name no module owns (so
    that Typer lists every command or suggests the closest)."""
    for arg in argv:
        if arg in _ROOT_FLAGS:
            continue
        if arg == "--version":
            return ()
        owners = tuple(m for m in _COMMAND_MODULES if arg in COMMANDS_OF[m])
        return owners or _COMMAND_MODULES
    return _COMMAND_MODULES


def __getattr__(name: str) -> Any:
    if name == "app":
        whole = build_app()
        globals()["app"] = whole
        return whole
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    pause_collector_until_authorized()
    try:
        build_app(modules_for(sys.argv[1:]))()
    except Exception as exc:
        # A governance error no command turned into its line (the catalog unreachable as a
        # command authenticates, for one): the same one line and exit code, not a traceback.
        code = exit_code(exc)
        if code is None:
            raise
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(code)
