"""``radgate predict --dataset VERSION --model NAME --output DIR``: batch inference over a cohort
(:func:`serving.batch.predict_dataset`); heavy imports happen when the command runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["predict"]


def predict(
    dataset: str = typer.Option(None, "--dataset", help="Dataset version: id, prefix, NAME or NAME@PREFIX."),
    studies: Path = typer.Option(
        None,
        "--studies",
        help="Instead of --dataset: a file of de-identified Study Instance UIDs, one a line.",
    ),
    model: str = typer.Option(..., "--model", help="Registered model name."),
    output: str = typer.Option(..., "--output", help="Folder or storage URL (s3://...) for the results."),
    alias: str = typer.Option("production", "--alias", help="The alias the gate must approve."),
    version: str = typer.Option(None, "--version", help="A pinned version instead of the alias."),
    split: str = typer.Option(None, "--split", help="Only this split (train, val, test)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, max=256, help="Instances per batch."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Model actors (one CPU each)."),
    gpus: float = typer.Option(0.0, "--gpus", min=0, help="GPUs per actor (the model runs on CUDA)."),
    ray_address: str = typer.Option(None, "--ray-address", help="A Ray cluster (HOST:PORT or auto)."),
    dicom: bool = typer.Option(True, "--dicom/--no-dicom", help="Also write each result's DICOM SR."),
    report: Path = typer.Option(None, "--report", help="Write the JSON report here."),
) -> None:
    """Run the approved model over every instance of a dataset version (Ray Data), asking the
    gate for every batch; results and DICOM objects are written as the service builds them."""
    from governance.auth import current_actor
    from imaging.datasets import DatasetError
    from serving.batch import predict_dataset
    from serving.model import GateDenied

    actor, role = current_actor()
    uids: list[str] | None = None
    if studies is not None:
        if not studies.is_file() or studies.stat().st_size > 10 << 20:
            typer.secho("error: --studies must be a file of at most 10 MiB", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        uids = studies.read_text(errors="replace").splitlines()
    try:
        result = predict_dataset(
            model, dataset, output=output, alias=None if version else alias, version=version,
            split=split, studies=uids,
            batch_size=batch_size, concurrency=concurrency, gpus=gpus, ray_address=ray_address,
            dicom=dicom, actor=actor, role=role,
        )  # fmt: skip
    except DatasetError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except GateDenied as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    data = result.as_dict()
    typer.echo(json.dumps(data))
    if report is not None:
        report.write_text(json.dumps(data, indent=2) + "\n")
    if data["denied"] or data["failed"]:
        typer.secho(
            f"error: {data['denied']} instance(s) refused by the gate, {data['failed']} failed",
            fg="red",
            err=True,
        )
        raise typer.Exit(1)
