"""``radgate demo-data``, ``radgate dataset ...`` and ``radgate train``: the training side of the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from governance.cli_support import fail

__all__ = ["register"]

dataset_app = typer.Typer(
    help="Dataset versions: labelled, de-identified instances with a patient-level split."
)


def demo_data(
    out_dir: Path = typer.Argument(..., help="Folder to write the DICOM studies and labels.csv into."),
    patients: int = typer.Option(40, "--patients", min=1, help="Number of synthetic patients."),
    images_per_patient: int = typer.Option(2, "--images-per-patient", min=1, help="Studies per patient."),
    seed: int = typer.Option(0, "--seed", help="Random seed (output is deterministic for a seed)."),
    size: int = typer.Option(128, "--size", min=16, help="Image rows and columns."),
    anatomy: bool = typer.Option(
        False,
        "--anatomy",
        help="Instead: brain MR series (real ch2/AAL anatomy, one synthetic subject per patient) "
        "with label maps, for segmentation (labels.csv names each series' NIfTI).",
    ),
    spacing: float = typer.Option(3.0, "--spacing", help="Voxel size in mm of the --anatomy series."),
) -> None:
    """Write synthetic chest radiographs (DICOM with PHI-bearing headers) and a labels CSV."""
    if anatomy:
        from imaging.volumes import VolumeError, write_anatomy_set

        try:
            anatomy_set = write_anatomy_set(out_dir, subjects=patients, seed=seed, spacing=spacing)
        except (VolumeError, ValueError) as exc:
            raise fail(str(exc)) from None
        typer.echo(
            f"wrote {len(anatomy_set.subjects)} MR series ({len(anatomy_set.files)} files) to "
            f"{anatomy_set.dicom_dir}; "
            f"labels: {anatomy_set.labels_csv} (--label-names {','.join(anatomy_set.label_names)})"
        )
        return
    from imaging.demo_data import write_demo_studies

    demo = write_demo_studies(
        out_dir, patients=patients, images_per_patient=images_per_patient, seed=seed, size=size
    )
    typer.echo(
        f"wrote {len(demo.files)} studies of {patients} patients to {out_dir} "
        f"(prevalence {demo.prevalence:.2f}); labels: {demo.labels_csv}"
    )


@dataset_app.command("create")
def dataset_create(
    name: str = typer.Argument(..., help="Dataset name (letters, digits, . _ -)."),
    labels: Path = typer.Option(
        ...,
        "--labels",
        help="CSV keyed by accession_number, patient_id, study_instance_uid, "
        "sop_instance_uid or sha256 (original or de-identified), with a label column.",
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


def train_command(
    config: Path = typer.Argument(..., help="Training config YAML (see configs/train/)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="1 = plain Lightning; N = Ray Train."),
    gpus_per_worker: float | None = typer.Option(None, "--gpus-per-worker", min=0, help="GPUs per worker."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address (ray://...)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value: key.path=value."),
    resume: str | None = typer.Option(
        None, "--resume", help="MLflow run id of an interrupted run to resume."
    ),
    no_register: bool = typer.Option(
        False, "--no-register", help="Evaluate and log, but register no version."
    ),
) -> None:
    """Train, evaluate and register a model as the config says; prints the run and model version."""
    from imaging.datasets import DatasetError
    from training.config import ConfigError, TrainTask, load_config

    extra = list(overrides)
    if workers is not None:
        extra.append(f"run.workers={workers}")
    if gpus_per_worker is not None:
        extra.append(f"run.gpus_per_worker={gpus_per_worker}")
    if ray_address is not None:
        extra.append(f"run.ray_address={ray_address}")
    if resume is not None:
        extra.append(f"run.resume_from={resume}")
    try:
        cfg = load_config(config, extra)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    from training.evidence import SupersededDatasetError
    from training.run import train

    try:
        outcome = train(cfg, register=False if no_register else None)
    except (ConfigError, DatasetError, SupersededDatasetError) as exc:
        raise fail(str(exc)) from None
    m = outcome.evaluation.overall
    attribute, metric, gap = outcome.evaluation.largest_gap
    typer.echo(f"run {outcome.run_id} (dataset {outcome.dataset_version[:12]})")
    if cfg.task is TrainTask.SEGMENTATION:
        per_structure: dict[str, dict[str, float]] = outcome.evaluation.to_dict()["overall"]
        typer.echo("test split: Dice / HD95 (mm) per structure")
        for name, values in per_structure.items():
            n = int(values["n"])
            typer.echo(f"  {name}: Dice {values['dice']:.3f}  HD95 {values['hd95']:.1f}  (n={n})")
    else:
        typer.echo(
            f"test AUROC {m['auroc']:.3f}  sensitivity {m['sensitivity']:.3f}  "
            f"specificity {m['specificity']:.3f}  "
            f"ECE {m['ece']:.3f}  (threshold {outcome.evaluation.threshold:.3g}, n={int(m['n'])})"
        )
    if attribute:
        typer.echo(f"largest subgroup gap: {attribute} {metric} {gap:.3f}")
    unit = "volumes" if cfg.task is TrainTask.SEGMENTATION else "images"
    typer.echo(
        f"training: {outcome.fit.steady_images_per_s:.1f} {unit}/s, "
        f"start-up {outcome.fit.startup_seconds:.1f} s"
    )
    if outcome.model_version:
        typer.echo(f"registered {outcome.model_name} version {outcome.model_version} (pending review)")
        typer.echo(f"artifact sha256 {outcome.artifact_sha256}")


def register(app: typer.Typer) -> None:
    """Add the training commands to the ``radgate`` app."""
    app.command("demo-data")(demo_data)
    app.add_typer(dataset_app, name="dataset")
    app.command("train")(train_command)
