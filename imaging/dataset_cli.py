"""``radgate dataset create|list|show``: dataset versions (labelled, de-identified instances with a
patient-level split). ``radgate dataset report`` is added to the same group by
:mod:`imaging.quality.cli`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from governance.cli_support import fail

__all__ = ["dataset_app", "register"]

dataset_app = typer.Typer(
    help="Dataset versions: labelled, de-identified instances with a patient-level split."
)


@dataset_app.command("create")
def dataset_create(
    name: str = typer.Argument(..., help="Dataset name (letters, digits, . _ -)."),
    labels: Path = typer.Option(
        ...,
        "--labels",
        help="CSV keyed by accession_number, patient_id, study_instance_uid, "
        "sop_instance_uid or sha256 (original or de-identified), with a label column and, "
        "optionally, a split column (train|val|test: the file's own split replaces --split).",
    ),
    split: str = typer.Option("train=0.7,val=0.15,test=0.15", "--split", help="Split fractions."),
    group_by: str = typer.Option(
        "patient", "--group-by", help="Unit kept whole across splits: patient|study."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the split."),
    label_names: str | None = typer.Option(
        None,
        "--label-names",
        help="Comma-separated class names, index = label (e.g. no_finding,opacity); for segmentation "
        "the structure of each label value, 0 = background (e.g. background,cerebellum,deep_grey_nuclei).",
    ),
    task: str = typer.Option(
        "classification",
        "--task",
        help="classification (a class per instance) | segmentation (the label column names a NIfTI "
        "or DICOM SEG label volume per series, relative to the labels file).",
    ),
) -> None:
    """Create (or find, if identical) a dataset version from the catalog and a labels file."""
    from imaging.datasets import DatasetError, GroupBy, Task, create_dataset, parse_split

    if task not in {t.value for t in Task}:
        raise fail("--task must be classification or segmentation")
    if task == Task.SEGMENTATION:
        _create_segmentation(name, labels, split, group_by, seed, label_names)
        return
    try:
        report = create_dataset(
            name,
            labels,
            split=parse_split(split),
            group_by=GroupBy(group_by),
            seed=seed,
            label_names=[n.strip() for n in label_names.split(",")] if label_names else None,
        )
    except ValueError as exc:  # DatasetError, bad --group-by
        raise fail(str(exc) if isinstance(exc, DatasetError) else f"bad option: {exc}") from None
    summary = report.version.manifest.summary()
    typer.echo(f"{'created' if report.created else 'exists'} {name} {report.version.id}")
    typer.echo(
        f"  {summary['instances']} instances, {summary['patients']} patients; label rows matched "
        f"{report.matched_rows}, unmatched {report.unmatched_rows}; "
        f"unlabelled instances {report.unlabelled_instances}"
    )
    if report.version.manifest.split_from_labels:
        typer.echo("  split: the labels file's split column")
    for split_name, counts in sorted(summary["splits"].items()):
        typer.echo(f"  {split_name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))


def _create_segmentation(
    name: str, labels: Path, split: str, group_by: str, seed: int, label_names: str | None
) -> None:
    from imaging.datasets import DatasetError, parse_split
    from imaging.volumes import create_segmentation_dataset

    try:
        report = create_segmentation_dataset(
            name,
            labels,
            split=parse_split(split),
            group_by=group_by,
            seed=seed,
            label_names=[n.strip() for n in label_names.split(",")] if label_names else None,
        )
    except DatasetError as exc:
        raise fail(str(exc)) from None
    summary = report.version.manifest.summary()
    typer.echo(f"{'created' if report.created else 'exists'} {name} {report.version.id}")
    typer.echo(
        f"  {summary['series']} series ({summary['instances']} instances), {summary['patients']} patients; "
        f"label rows matched {report.matched_rows}, unmatched {report.unmatched_rows}"
    )
    for reason, count in sorted(report.skipped.items()):
        typer.echo(f"  skipped {count} series: {reason}")
    label_map = sorted(report.version.manifest.label_map.items())
    typer.echo("  labels: " + ", ".join(f"{k}={v}" for k, v in label_map))
    for split_name, counts in sorted(summary["splits"].items()):
        typer.echo(f"  {split_name}: {counts['series']} series")


@dataset_app.command("list")
def dataset_list() -> None:
    """List dataset versions, newest first."""
    from imaging.datasets import list_datasets

    rows = list_datasets()
    if not rows:
        typer.echo("no dataset versions")
    for row in rows:
        typer.echo(
            f"{row['id'][:12]}  {row['name']:<24} {row['instances']:>6} instances "
            f"{row['patients']:>5} patients  "
            f"{row['created_at']:%Y-%m-%d %H:%M}"
        )


@dataset_app.command("show")
def dataset_show(
    ref: str = typer.Argument(..., help="Id, id prefix, NAME (newest) or NAME@IDPREFIX."),
    items: bool = typer.Option(False, "--items", help="Also print every item (de-identified keys only)."),
) -> None:
    """Show a dataset version: counts per split and label, subgroups, and optionally its items."""
    from imaging.datasets import DatasetError, get_dataset

    try:
        version = get_dataset(ref)
    except DatasetError as exc:
        raise fail(str(exc)) from None
    summary = version.manifest.summary()
    summary["created_at"] = version.created_at.isoformat()
    summary["split_fractions"] = version.manifest.split
    summary["group_by"] = str(version.manifest.group_by)
    if items:
        summary["items"] = [i.model_dump(mode="json") for i in version.manifest.items]
        if version.manifest.series is not None:  # segmentation: one item per series
            summary["items"] = [s.model_dump(mode="json") for s in version.manifest.series]
    typer.echo(json.dumps(summary, indent=2, default=str))


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
