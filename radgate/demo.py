"""``radgate demo``: the whole journey on embedded defaults, one stage after another.

1. generate synthetic radiograph studies with PHI-bearing headers (several sites, devices);
2. ingest them: de-identify (PS3.15 research profile), store by hash, record lineage;
3. scan what was stored for every identifier that went in (an independent check);
4. create a dataset version from the site's labels file (keyed by original accession numbers)
   and train, evaluate and register a model (Ray Train, MLflow);
5. explain: Grad-CAM overlay (PNG + DICOM Secondary Capture) of a stored case, and the
   parameter-randomisation sanity check recorded where the approval policy reads it;
6. govern: submit, two approvals by distinct people with the right roles, the policy checklist,
   and promotion to ``staging`` only if the policy holds (else the gate's refusal is shown);
7. serve: when promoted, Ray Serve loads ``NAME@staging`` through the gate and answers one
   prediction (DICOM in, JSON with the decision, explanation and clinician summary out).

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

STAGES = ("ingest", "train", "explain", "govern", "serve")


def stage(title: str) -> None:
    console.rule(f"[bold]{title}")


def _ingest_stage(home: Path, patients: int, workers: int) -> dict[str, Any]:
    from imaging.demo_data import write_demo_studies
    from imaging.ingest import Sink, iter_files, run_files

    stage("1. PACS export -> de-identification -> store")
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

    identifiers: set[str] = set()
    for study in demo.studies:
        identifiers.update({study.patient_id, study.accession_number, study.study_instance_uid})
    data["residual_phi_instances"] = residual_phi_scan(identifiers, report.profile)
    data["labels_csv"] = str(demo.labels_csv)
    return data


def residual_phi_scan(identifiers: set[str], profile: str) -> int:
    """Scan every instance stored under ``profile`` for the original identifiers (an independent
    check of de-identification); exits the demo when one is found."""
    from sqlalchemy import select

    from governance.catalog import Instance, open_catalog
    from imaging.phi_corpus import residual_phi
    from imaging.store import ContentStore

    stage("2. residual-PHI scan of the store")
    store = ContentStore.from_settings()
    with open_catalog().session() as session:
        keys = list(session.scalars(select(Instance.store_key).where(Instance.profile == profile)))
    leaking = [key for key in keys if residual_phi(store.get(key), identifiers)]
    console.print(
        f"scanned {len(keys)} stored instances for {len(identifiers)} original identifiers: "
        f"[{'red' if leaking else 'green'}]{len(leaking)} with residual identifiers[/]"
    )
    if leaking:
        raise typer.Exit(1)
    return len(leaking)


def _train_stage(labels_csv: Path, workers: int, overrides: list[str]) -> dict[str, Any]:
    from training.pipeline import train_from_labels

    stage("3. dataset version -> Ray Train -> MLflow (evaluation, registration pending review)")
    outcome = train_from_labels(labels_csv, dataset_name="demo", workers=workers, overrides=overrides)
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


def _store_paths(limit: int) -> list[Path]:
    from sqlalchemy import select

    from governance.catalog import Instance, open_catalog
    from imaging.store import ContentStore

    store = ContentStore.from_settings()
    with open_catalog().session() as session:
        keys = list(session.scalars(select(Instance.store_key).order_by(Instance.id).limit(limit)))
    return [store.path(key) for key in keys]


def _explain_stage(home: Path, model: str, version: str) -> dict[str, Any]:
    import torch

    from training.explain.case import explain_registered
    from training.explain.core import ExplainMethod
    from training.explain.sanity import run_randomization_check
    from training.explain.settings import load_explain_settings
    from training.explain.tracking import log_sanity_result, sanity_threshold_from_policy
    from training.registry import load_model

    stage("4. explanations: overlay for reviewers and PACS, sanity check")
    loaded = load_model(f"{model}/{version}")
    settings = load_explain_settings(None)
    cases = _store_paths(8)
    case = explain_registered(loaded, cases[0], method=ExplainMethod.GRADCAM, config=settings.explain)
    written = case.write(home / "demo" / "explain")
    console.print(case.summary)
    for kind, path in written.items():
        console.print(f"  {kind}: {path}")
    batch = torch.cat([loaded.preprocess(path) for path in cases])
    result = run_randomization_check(
        loaded.module,
        batch,
        config=settings.sanity,
        explain_config=settings.explain.model_copy(
            update={"target_layer": settings.explain.target_layer or loaded.gradcam_layer or None}
        ),
        threshold=sanity_threshold_from_policy(loaded.name),
    )
    log_sanity_result(result, run_id=loaded.run_id, model_name=loaded.name, model_version=loaded.version)
    console.print(
        f"sanity check (Adebayo et al. 2018): {result.status}, Spearman trained vs randomised "
        f"{result.spearman:.3f} (threshold {result.threshold:g})"
    )
    return {"overlay": {k: str(v) for k, v in written.items()}, "sanity": result.status}


DEMO_PEOPLE = {
    "demo-steward": "data-steward",
    "demo-trainer": "ml-engineer",
    "demo-ml-lead": "ml-engineer",
    "demo-radiologist": "clinical-reviewer",
}


def demo_principals(home: Path, token: str | None) -> dict[str, Any]:
    """The demo's people, created once and acted as by each stage (audited under their names).

    On an empty ``RADGATE_HOME`` a ``demo-admin`` is bootstrapped to create them; when other
    users exist, an admin's token (``--token`` or ``RADGATE_TOKEN``) does, once. Their tokens are
    kept in ``RADGATE_HOME/demo/tokens.json`` (0600, like the project key) for the next runs.
    """
    from governance.auth import AuthError, add_user, authenticate, has_users, resolve_token

    path = home / "demo" / "tokens.json"
    tokens: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in DEMO_PEOPLE if name not in tokens]
    try:
        if missing:
            if "demo-admin" in tokens:
                admin = authenticate(tokens["demo-admin"])
            elif not has_users():
                tokens["demo-admin"] = add_user("demo-admin", "admin", by=None).token
                admin = authenticate(tokens["demo-admin"])
            else:
                admin = authenticate(resolve_token(token))
            for name in missing:
                tokens[name] = add_user(name, DEMO_PEOPLE[name], by=admin).token
        people = {name: authenticate(tokens[name]) for name in DEMO_PEOPLE}
    except AuthError as exc:
        console.print(
            f"[red]error:[/red] {exc} (the demo creates its users on an empty RADGATE_HOME, or "
            "with an admin's --token when other users exist)"
        )
        raise typer.Exit(4) from None
    finally:
        if tokens:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(tokens, handle)
    return people


def govern_stage(
    people: dict[str, Any], model: str, version: str, what: str = "synthetic chest radiographs"
) -> dict[str, Any]:
    from governance.approvals.workflow import PolicyNotSatisfied, Workflow

    stage("5. governance: submit, two-person approval, policy gate, promotion")
    workflow = Workflow()
    workflow.submit(people["demo-trainer"], model, version, f"demo run: {what}")
    workflow.approve(people["demo-radiologist"], model, version, "overlays reviewed on the demo gallery")
    workflow.approve(people["demo-ml-lead"], model, version, "metrics and lineage reviewed")
    checklist = workflow.status(model, version)
    table = Table(title=f"policy checklist {model} v{version}")
    for column in ("requirement", "passed", "value", "expected"):
        table.add_column(column)
    for item in checklist.items:
        mark = "[green]yes[/]" if item.passed else "[red]no[/]"
        table.add_row(item.name, mark, str(item.value)[:40], item.expected[:40])
    console.print(table)
    try:
        workflow.promote(people["demo-ml-lead"], model, version, "staging")
        promoted = True
        console.print(
            f"[green]promoted[/] {model} v{version} to alias 'staging': the serving gate will allow it"
        )
    except PolicyNotSatisfied as exc:
        promoted = False
        failed = ", ".join(item.name for item in exc.checklist.failures)
        console.print(
            f"[yellow]promotion refused by the policy gate[/] (not met: {failed}); "
            "a small demo model stays pending, which is the gate doing its job"
        )
    return {
        "status": checklist.status,
        "promoted_to_staging": promoted,
        "failed": [i.name for i in checklist.failures],
    }


def _serve_stage(home: Path, model: str) -> dict[str, Any]:
    from serving.demo import predict_once

    stage("6. serving: Ray Serve behind the gate, one DICOM in, JSON out")
    token = json.loads((home / "demo" / "tokens.json").read_text())["demo-radiologist"]
    result = predict_once(model, _store_paths(1)[0], token=token, alias="staging")
    shown: dict[str, Any] = {k: result[k] for k in ("model", "version", "decision", "summary") if k in result}
    console.print_json(json.dumps(shown, default=str))
    return shown


def demo(
    patients: int | None = typer.Option(
        None,
        "--patients",
        min=4,
        help="Synthetic patients: 24 with two radiographs each, or 24 brain MR series (--task segmentation).",
    ),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), "--workers", "-w", min=1, help="Processes."),
    stages: str = typer.Option(",".join(STAGES), "--stages", help=f"Comma-separated subset of {STAGES}."),
    token: str | None = typer.Option(
        None, "--token", help="An admin's token, needed once when users exist but no demo users yet."
    ),
    task: str = typer.Option(
        "classification",
        "--task",
        help="classification (chest radiographs) | segmentation (brain MR series -> 3D UNet -> DICOM SEG).",
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Training config override KEY=VALUE (repeatable), e.g. --set optim.max_epochs=10."
    ),
    pacs: str | None = typer.Option(
        None,
        "--pacs",
        help="Segmentation: AET@HOST:PORT of a PACS to send the DICOM SEG and SR to "
        "(default: an Orthanc answering C-ECHO as ORTHANC@127.0.0.1:4242, if any).",
    ),
) -> None:
    """Run the end-to-end demo on embedded defaults (SQLite, local MLflow, local Ray).

    The demo creates its own users (an admin bootstrapped on an empty RADGATE_HOME, a data
    steward, two ML engineers, a radiologist) and runs each stage as the person whose role it
    needs; their tokens stay in RADGATE_HOME/demo/tokens.json (owner-only)."""
    from governance.auth import acting_as
    from governance.settings import get_settings

    wanted = [s.strip() for s in stages.split(",") if s.strip()]
    if task not in ("classification", "segmentation"):
        console.print("[red]error:[/red] --task must be classification or segmentation")
        raise typer.Exit(2)
    unknown = set(wanted) - set(STAGES)
    if unknown:
        console.print(f"[red]error:[/red] unknown stage(s): {', '.join(sorted(unknown))}")
        raise typer.Exit(2)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    settings = get_settings()
    console.print(f"RADGATE_HOME={settings.home}")
    start = time.perf_counter()
    summary: dict[str, Any] = {"home": str(settings.home)}
    people = demo_principals(settings.home, token)
    if task == "segmentation":
        from radgate.demo_segmentation import run_segmentation_demo

        summary.update(
            run_segmentation_demo(settings.home, people, patients or 24, workers, wanted, pacs, overrides)
        )
        summary["elapsed_s"] = round(time.perf_counter() - start, 1)
        console.rule("[bold green]done")
        print(json.dumps(summary))
        return
    patients = patients or 24
    with acting_as(people["demo-steward"]):
        ingest = _ingest_stage(settings.home, patients, workers)
    summary["ingest"] = {
        k: ingest[k] for k in ("inputs", "deidentified", "quarantined", "residual_phi_instances")
    }
    if "train" in wanted:
        with acting_as(people["demo-trainer"]):
            summary["train"] = train = _train_stage(Path(ingest["labels_csv"]), workers, overrides)
            model, version = train["model"], train["model_version"]
            if "explain" in wanted and model and version:
                summary["explain"] = _explain_stage(settings.home, model, version)
        if "govern" in wanted and model and version:
            summary["govern"] = governed = govern_stage(people, model, version)
            if "serve" in wanted and governed["promoted_to_staging"]:
                summary["serve"] = _serve_stage(settings.home, model)
    summary["elapsed_s"] = round(time.perf_counter() - start, 1)
    console.rule("[bold green]done")
    print(json.dumps(summary))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
