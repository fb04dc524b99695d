"""``radgate demo-data`` and ``radgate train``: the training side of the CLI (``radgate dataset``
is the imaging layer's: :mod:`imaging.dataset_cli`)."""

from __future__ import annotations

from pathlib import Path

import typer

from governance.cli_support import fail

__all__ = ["register"]


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
    app.command("train")(train_command)
