"""``radgate demo``: the whole journey on embedded defaults, one timed stage after another.

Classification (default, :mod:`radgate.demo_classification`): brain MR slices from real anatomy
with an inserted lesion in about half -> de-identification -> dataset version -> champion and
challenger (trained on permuted labels) -> calibration, explanations checked against the site's
lesion masks -> two-person approval: the champion promoted, the challenger refused by the policy
-> Ray Serve behind the gate -> a held-out study sent from Orthanc to the inference AE -> SR and
saliency (HiResCAM) Secondary Capture back in Orthanc -> a reviewer's feedback in monitoring and the audit.
Segmentation (``--task segmentation``, :mod:`radgate.demo_segmentation`): brain MR series ->
3D UNet -> DICOM SEG in the PACS.

Both print a stage table (stage, seconds, outcome) and write ``RADGATE_HOME/demo/summary.json``
with every figure; the last line of stdout is the same summary as JSON. A stage that fails says
which, why and what to run next, and the demo exits non-zero; so does a demo that ends without a
promoted model.
"""

from __future__ import annotations

import os

import typer

from radgate.demo_stages import (
    DemoFailure,
    StageRunner,
    console,
    demo_principals,
    govern_stage,
    residual_phi_scan,
)

__all__ = ["DemoFailure", "StageRunner", "demo", "govern_stage", "register", "residual_phi_scan"]

STAGES = ("ingest", "train", "explain", "govern", "serve")


def demo(
    patients: int | None = typer.Option(
        None,
        "--patients",
        min=4,
        help="Synthetic studies: 640 brain MR slices (one per patient), or 24 MR series (segmentation).",
    ),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), "--workers", "-w", min=1, help="Processes."),
    stages: str = typer.Option(",".join(STAGES), "--stages", help=f"Comma-separated subset of {STAGES}."),
    token: str | None = typer.Option(
        None, "--token", help="An admin's token, needed once when users exist but no demo users yet."
    ),
    task: str = typer.Option(
        "classification",
        "--task",
        help="classification (brain MR slices: lesion?) | segmentation (MR series -> 3D UNet -> SEG).",
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Training config override KEY=VALUE (repeatable), e.g. --set optim.max_epochs=10."
    ),
    pacs: str | None = typer.Option(
        None,
        "--pacs",
        help="AET@HOST:PORT of an existing PACS to use (classification: else an Orthanc the demo "
        "starts on 127.0.0.1; segmentation: else ORTHANC@127.0.0.1:4242 if it answers).",
    ),
) -> None:
    """Run the end-to-end demo on embedded defaults (SQLite, local MLflow, local Ray).

    The demo creates its own users (an admin bootstrapped on an empty RADGATE_HOME, a data
    steward, two ML engineers, a radiologist) and runs each stage as the person whose role it
    needs; their tokens stay in RADGATE_HOME/demo/tokens.json (owner-only)."""
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
    runner = StageRunner(settings.home, task)
    people = demo_principals(settings.home, token)
    failure: DemoFailure | None = None
    try:
        if task == "segmentation":
            from radgate.demo_segmentation import run_segmentation_demo

            run_segmentation_demo(runner, people, patients or 24, workers, wanted, pacs, overrides)
        else:
            from radgate.demo_classification import DEMO_STUDIES, run_classification_demo

            studies = patients or DEMO_STUDIES
            run_classification_demo(runner, people, studies, workers, wanted, pacs, overrides)
    except DemoFailure as exc:
        failure = exc
    if failure is None and {"train", "govern"} <= set(wanted) and not runner.summary.get("promoted"):
        failure = DemoFailure(
            "govern", "the demo ended without a promoted model", "see the policy's reasons above"
        )
    if failure is not None:
        console.print(f"[red]stage '{failure.stage}' failed:[/red] {failure.why}")
        if failure.next_step:
            console.print(f"next: {failure.next_step}")
    else:
        console.rule("[bold green]done")
    runner.finish(failure)  # the stage table, summary.json, and the summary as the last line
    if failure is not None:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
