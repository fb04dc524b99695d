"""``radgate dataset report NAME[@VERSION]``: the dataset quality and bias report.

``register(app)`` adds ``report`` to the ``dataset`` group that ``imaging.dataset_cli`` registers
(register this module after it); without that group it creates one.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from governance.cli_support import fail

__all__ = ["dataset_report", "register"]


def dataset_report(
    ref: str = typer.Argument(..., help="Dataset version: id, id prefix, NAME (newest) or NAME@IDPREFIX."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for report.json, report.html and plots (default RADGATE_HOME/reports/...).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the whole JSON report on stdout."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when the report has warnings."),
) -> None:
    """Quality and bias report of a dataset version: balance, subgroups, duplicates, acquisition."""
    from governance.settings import get_settings
    from imaging.compliance.config import ComplianceConfigError
    from imaging.datasets import DatasetError, get_dataset
    from imaging.quality import build_report, write_report

    try:
        version = get_dataset(ref)
        report = build_report(version)
    except (DatasetError, ComplianceConfigError) as exc:
        raise fail(str(exc)) from None
    folder = out or get_settings().home / "reports" / "datasets" / f"{version.name}-{version.short_id}"
    paths = write_report(report, folder)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1, default=str))
    else:
        d = report.to_dict()
        typer.echo(
            f"dataset {version.name}@{version.short_id}: {d['dataset']['instances']} instances, "
            f"{d['dataset']['patients']} patients"
        )
        for split, s in d["splits"].items():
            labels = ", ".join(f"{k}={v}" for k, v in s["labels"].items())
            typer.echo(f"  {split:5} {s['instances']:5d}  {labels}")
        dup = d["duplicates"]
        typer.echo(
            f"  duplicates: exact {dup['exact']['within_split']} within / "
            f"{dup['exact']['across_splits']} across splits; "
            f"near {dup['near']['within_split']} within / {dup['near']['across_splits']} across"
        )
        typer.echo(f"  unreadable pixels: {d['pixels']['unreadable']}")
        for w in d["warnings"]:
            typer.echo(f"  WARNING {w['code']}: {w['message']} (threshold {w['threshold']})")
        typer.echo(f"status: {report.status}")
        typer.echo(f"report: {paths['html']} and {paths['json']}")
    if strict and report.warnings:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``report`` to the ``dataset`` group (created if no other module registered it)."""
    for group in app.registered_groups:
        if group.name == "dataset" and group.typer_instance is not None:
            group.typer_instance.command("report")(dataset_report)
            return
    dataset_app = typer.Typer(help="Dataset versions.")
    dataset_app.command("report")(dataset_report)
    app.add_typer(dataset_app, name="dataset")
