"""The ``radgate`` command: one Typer app composed of each package's subcommands.

Each package owns its commands in a ``cli`` module exposing ``register(app)``; heavy imports
(torch, ray, mlflow) happen inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging

import typer

from governance.cli.guard import guard_typer_app
from radgate import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="radgate",
    help="RadGate: DICOM de-identification, training, explanations, approvals and serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"radgate {__version__}")
        raise typer.Exit()


@app.callback()
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


for _module in _COMMAND_MODULES:
    try:
        importlib.import_module(_module).register(app)
    except ModuleNotFoundError as exc:  # a package not built yet in this checkout
        if exc.name is None or not (_module + ".").startswith(exc.name + "."):
            raise

# Every command authenticates and checks its role (governance/auth/access.py) before it runs.
guard_typer_app(app)


def main() -> None:
    app()
