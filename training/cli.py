"""``radgate demo-data``, ``radgate dataset ...`` and ``radgate train``: the training side of the CLI."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]


def demo_data(
    out_dir: Path = typer.Argument(..., help="Folder to write the DICOM studies and labels.csv into."),
    patients: int = typer.Option(40, "--patients", min=1, help="Number of synthetic patients."),
    images_per_patient: int = typer.Option(2, "--images-per-patient", min=1, help="Studies per patient."),
    seed: int = typer.Option(0, "--seed", help="Random seed (output is deterministic for a seed)."),
    size: int = typer.Option(128, "--size", min=16, help="Image rows and columns."),
) -> None:
    """Write synthetic chest radiographs (DICOM with PHI-bearing headers) and a labels CSV."""
    from imaging.demo_data import write_demo_studies

    demo = write_demo_studies(
        out_dir, patients=patients, images_per_patient=images_per_patient, seed=seed, size=size
    )
    typer.echo(
        f"wrote {len(demo.files)} studies of {patients} patients to {out_dir} "
        f"(prevalence {demo.prevalence:.2f}); labels: {demo.labels_csv}"
    )


def register(app: typer.Typer) -> None:
    """Add the training commands to the ``radgate`` app."""
    app.command("demo-data")(demo_data)
