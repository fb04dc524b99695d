"""``radgate demo``: the whole journey on embedded defaults, one stage after another.

1. generate synthetic radiograph studies with PHI-bearing headers (several sites, devices);
2. ingest them: de-identify (PS3.15 research profile), store by hash, record lineage;
3. scan what was stored for every identifier that went in (an independent check);
4. create a dataset version from the site's labels file (keyed by original accession numbers)
   and train, evaluate and register a model (Ray Train, MLflow), unless ``--stages ingest``.

Each stage prints what it did; the last line is a JSON summary.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["demo", "register"]

console = Console()

STAGES = ("ingest", "train")


def _stage(title: str) -> None:
    console.rule(f"[bold]{title}")


def _ingest_stage(home: Path, patients: int, workers: int) -> dict[str, Any]:
    from governance.settings import get_settings
    from imaging.demo_data import write_demo_studies
    from imaging.ingest import Sink, iter_files, run_files

    _stage("1. PACS export -> de-identification -> store")
    source = home / "demo" / "pacs-export"
    demo = write_demo_studies(source, patients=patients, images_per_patient=2, seed=7)
    console.print(
        f"generated {len(demo.files)} DX/CR studies of {patients} patients "
        "(PHI in headers and descriptions), "
        f"labels file keyed by accession number: {demo.labels_csv.name}"
    )
    # The labels file stays with the data steward; only the images go through the gateway.
    files = list(iter_files(demo.files))
    report = run_files(files, sink=Sink.STORE, workers=workers, source="demo")
    data = report.as_dict()
    table = Table(show_header=False, title="ingest")
    for key in ("inputs", "deidentified", "duplicates", "quarantined", "files_per_s", "profile", "key_id"):
        table.add_row(key, str(data[key]))
    for reason, count in data["quarantine_reasons"].items():
        table.add_row(f"  quarantined: {reason}", str(count))
    console.print(table)

    _stage("2. residual-PHI scan of the store")
    from sqlalchemy import select

    from governance.catalog import Instance, open_catalog
    from imaging.phi_corpus import residual_phi
    from imaging.store import ContentStore

    identifiers: set[str] = set()
    for study in demo.studies:
        identifiers.update({study.patient_id, study.accession_number, study.study_instance_uid})
    store = ContentStore.from_settings(get_settings())
    with open_catalog().session() as session:
        keys = list(session.scalars(select(Instance.store_key).where(Instance.profile == report.profile)))
    leaking = [key for key in keys if residual_phi(store.get(key), identifiers)]
    console.print(
        f"scanned {len(keys)} stored instances for {len(identifiers)} original identifiers: "
        f"[{'red' if leaking else 'green'}]{len(leaking)} with residual identifiers[/]"
    )
    if leaking:
        raise typer.Exit(1)
    data["residual_phi_instances"] = len(leaking)
    data["labels_csv"] = str(demo.labels_csv)
    return data


def _train_stage(labels_csv: Path, workers: int) -> dict[str, Any]:
    from training.pipeline import train_from_labels

    _stage("3. dataset version -> Ray Train -> MLflow (evaluation, registration pending review)")
    outcome = train_from_labels(labels_csv, dataset_name="demo", workers=workers)
    version = outcome.dataset.version
    run = outcome.training
    console.print(f"dataset version {version.id[:16]} ({version.name}), patient-level split")
    metrics = {k: round(v, 4) for k, v in sorted(run.metrics.items()) if isinstance(v, int | float)}
    table = Table(show_header=False, title=f"model {run.model_name} v{run.model_version}")
    for key in [k for k in metrics if k.startswith("test_")][:12]:
        table.add_row(key, str(metrics[key]))
    console.print(table)
    return {
        "dataset_version": version.id,
        "model": run.model_name,
        "model_version": run.model_version,
        "mlflow_run_id": run.run_id,
        "artifact_sha256": run.artifact_sha256,
        "test_metrics": {k: v for k, v in metrics.items() if k.startswith("test_")},
    }


def demo(
    patients: int = typer.Option(24, "--patients", min=4, help="Synthetic patients (two studies each)."),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), "--workers", "-w", min=1, help="Processes."),
    stages: str = typer.Option(",".join(STAGES), "--stages", help=f"Comma-separated subset of {STAGES}."),
) -> None:
    """Run the end-to-end demo on embedded defaults (SQLite, local MLflow, local Ray)."""
    from governance.settings import get_settings

    wanted = [s.strip() for s in stages.split(",") if s.strip()]
    unknown = set(wanted) - set(STAGES)
    if unknown:
        console.print(f"[red]error:[/red] unknown stage(s): {', '.join(sorted(unknown))}")
        raise typer.Exit(2)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    settings = get_settings()
    console.print(f"RADGATE_HOME={settings.home}")
    start = time.perf_counter()
    summary: dict[str, Any] = {"home": str(settings.home)}
    ingest = _ingest_stage(settings.home, patients, workers)
    summary["ingest"] = {
        k: ingest[k] for k in ("inputs", "deidentified", "quarantined", "residual_phi_instances")
    }
    if "train" in wanted:
        summary["train"] = _train_stage(Path(ingest["labels_csv"]), workers)
    summary["elapsed_s"] = round(time.perf_counter() - start, 1)
    console.rule("[bold green]done")
    print(json.dumps(summary))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
