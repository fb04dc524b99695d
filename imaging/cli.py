"""Commands of the imaging layer: ``deid``, ``ingest``, ``catalog``, ``quarantine``, ``reid``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.table import Table

from governance.cli_support import fail, out, progress_bar
from imaging.deid.errors import ProfileError

__all__ = ["register"]


def _summary(report: dict[str, object], title: str) -> None:
    table = Table(title=title, show_header=False)
    for key in (
        "inputs",
        "deidentified",
        "duplicates",
        "quarantined",
        "workers",
        "files_per_s",
        "profile",
        "key_id",
    ):
        table.add_row(key, str(report.get(key)))
    reasons = report.get("quarantine_reasons") or {}
    for reason, count in sorted(reasons.items()):  # type: ignore[attr-defined]
        table.add_row(f"  quarantined: {reason}", str(count))
    actions = report.get("actions") or {}
    table.add_row("actions", ", ".join(f"{k}={v}" for k, v in sorted(actions.items())))  # type: ignore[attr-defined]
    out.print(table)


def _run(
    inputs: list[Path], *, sink: str, output_dir: Path | None, profile: str | None, workers: int, source: str
) -> dict[str, object]:
    from imaging.ingest import Sink, iter_files, run_files

    files = list(iter_files(inputs))
    progress, advance = progress_bar(len(files), "de-identifying")
    try:
        with progress:
            report = run_files(
                files,
                sink=Sink(sink),
                output_dir=output_dir,
                profile=profile,
                workers=workers,
                source=source,
                on_result=advance,
            )
    except ProfileError as exc:
        raise fail(str(exc)) from exc
    data = report.as_dict()
    if report.inputs != report.deidentified + report.quarantined:
        raise fail("internal error: inputs != de-identified + quarantined", 3)
    return data


def deid(
    input_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder tree of DICOM files."),
    output_dir: Path = typer.Argument(..., help="Where de-identified files go (<study>/<series>/<sop>.dcm)."),
    profile: str = typer.Option(None, "--profile", "-p", help="Profile name in configs/deid or a YAML path."),
    workers: int = typer.Option(os.cpu_count() or 1, "--workers", "-w", min=1, help="Worker processes."),
    report: Path = typer.Option(None, "--report", help="Write the JSON report here."),
) -> None:
    """De-identify a folder tree per DICOM PS3.15 Annex E into OUTPUT_DIR.

    Unsafe or unreadable inputs are quarantined (sealed) under RADGATE_HOME/quarantine, never
    written to OUTPUT_DIR. The pseudonym map is stored encrypted in the catalog.
    """
    input_dir, output_dir = input_dir.resolve(), output_dir.resolve()
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise fail("OUTPUT_DIR must not be inside INPUT_DIR")
    output_dir.mkdir(parents=True, exist_ok=True)
    data = _run(
        [input_dir], sink="folder", output_dir=output_dir, profile=profile, workers=workers, source="deid"
    )
    data["output_dir"] = str(output_dir)
    _summary(data, "radgate deid")
    if report is not None:
        report.write_text(json.dumps(data, indent=2) + "\n")


def ingest(
    paths: list[str] = typer.Argument(
        ...,
        help="Files or folders to import; with --ray-address one SOURCE: a folder, an s3:// prefix "
        "or a manifest (*.manifest, *.txt, *.lst: one path or URL per line).",
    ),
    profile: str = typer.Option(None, "--profile", "-p", help="Profile name in configs/deid or a YAML path."),
    workers: int = typer.Option(os.cpu_count() or 1, "--workers", "-w", min=1, help="Worker processes."),
    report: Path = typer.Option(None, "--report", help="Write the JSON report here."),
    ray_address: str = typer.Option(
        None, "--ray-address", help="Spread the work over this Ray cluster (HOST:PORT, or auto); resumable."
    ),
) -> None:
    """Import DICOM into the platform: de-identify, store by sha256, record lineage. Idempotent."""
    if ray_address:
        from imaging.cluster_cli import ingest_on_ray

        data = ingest_on_ray(paths, ray_address=ray_address, profile=profile)
    else:
        if not all(Path(p).exists() for p in paths):
            raise fail("every PATH must be an existing file or folder (URLs and manifests: --ray-address)")
        files = [Path(p) for p in paths]
        data = _run(files, sink="store", output_dir=None, profile=profile, workers=workers, source="folder")
    _summary(data, "radgate ingest")
    if report is not None:
        report.write_text(json.dumps(data, indent=2) + "\n")


def catalog(
    level: str = typer.Option(
        "summary", "--level", "-l", help="summary | studies | series | instances | quarantine"
    ),
    limit: int = typer.Option(50, "--limit", min=1, help="Rows to list."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List what the platform holds: studies, series, instances and quarantine."""
    from imaging.catalog_views import catalog_view

    try:
        rows = catalog_view(level, limit)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    if not rows:
        out.print("(empty)")
        return
    table = Table(title=f"catalog: {level}")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)


def reid(
    pseudonym: str = typer.Argument(..., help="A patient pseudonym or de-identified UID."),
    kind: str = typer.Option(
        None, "--kind", help="patient_id | patient_name | accession | study_uid | series_uid | sop_uid"
    ),
    reason: str = typer.Option(..., "--reason", help="Why re-identification is needed (audited)."),
    token: str = typer.Option(None, "--token", help="Honest-broker token (default: RADGATE_TOKEN)."),
) -> None:
    """Re-identify a pseudonym (honest-broker role only; every call is audited)."""
    from imaging.reid import ReidError, reidentify

    try:
        found = reidentify(pseudonym, kind=kind, reason=reason, token=token)
    except ReidError as exc:
        raise fail(str(exc)) from exc
    if not found:
        raise fail("no original recorded for that pseudonym", 1)
    for item_kind, original in found:
        out.print(f"{item_kind}\t{original}")


def register(app: typer.Typer) -> None:
    app.command("deid")(deid)
    app.command("ingest")(ingest)
    app.command("catalog")(catalog)
    app.command("reid")(reid)
