"""``radgate explain``, ``radgate explain-sanity`` and ``radgate explain-segmentation``:
explanations of registered models."""

from __future__ import annotations

from pathlib import Path

import typer

from governance.cli_support import fail

__all__ = ["register"]

_METHODS = (
    "gradcam, hirescam, saliency, ig (Integrated Gradients) or occlusion; default: the method the "
    "network family shows reviewers (HiResCAM for resnet10-lite, else Grad-CAM)"
)
_MODEL_HELP = "Registered model: NAME@ALIAS or NAME/VERSION."
_METHOD_HELP = f"Attribution method: {_METHODS}."


def _method(value: str | None) -> str | None:
    from training.explain.core import ExplainMethod

    if value is None:
        return None
    try:
        return ExplainMethod(value.lower()).value
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not one of: {_METHODS}") from None


def _gate_alias(model: str) -> None:
    """A serving alias (``NAME@ALIAS``) is explained only while the gate allows what it points
    at: explanations of "the production model" must be of an approved, unrevoked version. A
    pinned ``NAME/VERSION`` is a candidate under review and is explained as such."""
    from governance.approvals import gate
    from training.registry import parse_model_ref

    name, alias, _ = parse_model_ref(model)
    if alias is None:
        return
    decision = gate(name, alias, fresh=True)
    if not decision.allowed:
        raise fail(f"{model} is not approved now: " + "; ".join(decision.reasons[:3]), 3)


def _settings(path: Path | None):  # type: ignore[no-untyped-def]
    from training.explain.settings import ExplainSettingsError, load_explain_settings

    try:
        return load_explain_settings(path)
    except ExplainSettingsError as exc:
        raise fail(str(exc)) from None


_CONFIG_HELP = "Explain settings YAML (default: configs/explain/default.yaml)."


def _load(model: str, tracking_uri: str | None):  # type: ignore[no-untyped-def]
    import mlflow

    from governance.settings import get_settings
    from training.registry import ArtifactIntegrityError, ModelNotFoundError, load_model

    # models:/ downloads resolve through the process-wide registry URI: point it at ours, or
    # MLflow falls back to ./mlflow.db in the working directory.
    uri = tracking_uri or get_settings().resolved_mlflow_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _gate_alias(model)
    try:
        return load_model(model, tracking_uri=uri)
    except ModelNotFoundError as exc:
        raise fail(str(exc)) from None
    except ArtifactIntegrityError as exc:
        raise fail(f"refusing to explain with a tampered model: {exc}", 3) from None


def explain_command(
    input_dcm: Path = typer.Argument(..., exists=True, dir_okay=False, help="DICOM instance to explain."),
    model: str = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    method: str | None = typer.Option(None, "--method", callback=_method, help=_METHOD_HELP),
    out: Path = typer.Option(..., "--out", "-o", file_okay=False, help="Output folder (PNG, DICOM, JSON)."),
    target: str | None = typer.Option(
        None, "--target", help="Label name or index to explain (default: the finding of a binary model)."
    ),
    config: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False, help=_CONFIG_HELP),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow URI (default: settings)."),
) -> None:
    """Explain one DICOM instance with a registered model: overlay PNG, DICOM Secondary Capture
    (same study, new series, model in Contributing Equipment) and a JSON result with the
    clinician summary."""
    from pydicom.errors import InvalidDicomError

    from imaging.results import ResultImageError, SecondaryCaptureError
    from training.explain.case import explain_registered
    from training.explain.core import ExplainError

    settings = _settings(config)
    loaded = _load(model, tracking_uri)
    try:
        case = explain_registered(loaded, input_dcm, method=method, target=target, config=settings.explain)
    except (InvalidDicomError, ResultImageError, SecondaryCaptureError, ExplainError) as exc:
        raise fail(f"cannot explain {input_dcm.name}: {exc}") from None
    except RuntimeError as exc:  # MONAI's loader wraps unreadable files in RuntimeError
        raise fail(f"cannot read {input_dcm.name} as the model's input: {type(exc).__name__}") from None
    written = case.write(out)
    typer.echo(case.summary)
    if case.sanity != "passed":
        typer.secho(
            f"note: this version's saliency sanity check is {case.sanity or 'not recorded'}",
            fg=typer.colors.YELLOW,
            err=True,
        )
    for kind, path in written.items():
        typer.echo(f"{kind}: {path}")


def sanity_command(
    images: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="A few DICOM test images."),
    model: str = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    method: str | None = typer.Option(None, "--method", callback=_method, help=_METHOD_HELP),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Max |Spearman| trained vs randomised (default: policy, else --config)."
    ),
    cascade: bool = typer.Option(True, "--cascade/--no-cascade", help="Also randomise block by block."),
    record: bool = typer.Option(True, "--record/--no-record", help="Log to MLflow, tag the version."),
    config: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False, help=_CONFIG_HELP),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow URI (default: settings)."),
) -> None:
    """Run the parameter-randomisation sanity check (Adebayo et al. 2018) on a registered
    version and record it where the approval policy reads it (tag radgate.saliency_sanity)."""
    import torch

    from training.explain.core import ExplainMethod
    from training.explain.sanity import run_randomization_check
    from training.explain.tracking import log_sanity_result, sanity_threshold_from_policy

    settings = _settings(config)
    loaded = _load(model, tracking_uri)
    try:
        batch = torch.cat([loaded.preprocess(path) for path in images])
    except RuntimeError as exc:
        raise fail(f"cannot read the images as the model's input: {type(exc).__name__}") from None
    limit = threshold if threshold is not None else sanity_threshold_from_policy(loaded.name)
    result = run_randomization_check(
        loaded.module,
        batch,
        config=settings.sanity.model_copy(
            update={"method": ExplainMethod(method) if method else settings.sanity.method, "cascade": cascade}
        ),
        explain_config=settings.explain.model_copy(
            update={"target_layer": settings.explain.target_layer or loaded.gradcam_layer or None}
        ),
        threshold=limit,
    )
    if record:
        log_sanity_result(
            result,
            run_id=loaded.run_id,
            model_name=loaded.name,
            model_version=loaded.version,
            tracking_uri=tracking_uri,
        )
    typer.echo(
        f"{loaded.name}/{loaded.version} {result.method.value}: {result.status} "
        f"(Spearman {result.spearman:.3f}, threshold {result.threshold:g}; SSIM {result.ssim:.3f}; "
        f"control {result.control_spearman:.3f}; faithfulness gap "
        f"{'n/a' if result.faithfulness_gap is None else f'{result.faithfulness_gap:.3f}'})"
    )
    for reason in result.reasons:
        typer.echo(f"  - {reason}")
    if not result.passed:
        raise typer.Exit(1)


def segmentation_command(
    series: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="Folder with the series' DICOM files."
    ),
    model: str = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    structure: str = typer.Option(
        ..., "--structure", "-s", help="Structure name (or label value) to explain."
    ),
    method: str = typer.Option(
        "gradcam", "--method", help="gradcam (decoder layer) or occlusion (3D patches)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", file_okay=False, help="Output folder (PNG per slice, JSON)."
    ),
    slices: int = typer.Option(3, "--slices", min=1, max=12, help="Slices to render (most attribution)."),
    sanity: bool = typer.Option(False, "--sanity/--no-sanity", help="Also run the randomisation check."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow URI (default: settings)."),
) -> None:
    """Explain one structure of a 3D segmentation model on a DICOM series: Grad-CAM of the
    structure's summed logit (or occlusion over 3D patches) rendered on the slices through it,
    optionally with the parameter-randomisation sanity check."""
    from governance.audit import record
    from governance.auth import current_actor
    from training.explain.segmentation import SegmentationExplainMethod, explain_series

    if method not in {m.value for m in SegmentationExplainMethod}:
        raise fail(f"--method must be one of {', '.join(m.value for m in SegmentationExplainMethod)}")
    loaded = _load(model, tracking_uri)
    files = sorted(p for p in series.rglob("*") if p.is_file())
    try:
        summary = explain_series(loaded, files, structure, out, method=method, slices=slices, sanity=sanity)
    except ValueError as exc:
        raise fail(f"cannot explain this series: {exc}") from None
    actor, role = current_actor()
    record(
        actor,
        "explain.segmentation",
        f"model:{loaded.name}/{loaded.version}",
        {"structure": summary["structure"], "method": method, "files": len(files)},
        role=role,
    )
    volumes = {s["name"]: s["volume_ml"] for s in summary["segmentation"]["structures"]}
    typer.echo(f"{loaded.name}/{loaded.version} {method} for {summary['structure']}; volumes (mL): {volumes}")
    if "sanity" in summary:
        check = summary["sanity"]
        typer.echo(
            f"sanity: {'passed' if check['passed'] else 'failed'} (Spearman {check['spearman']:.3f}, "
            f"control {check['control_spearman']:.3f}, threshold {check['threshold']:g})"
        )
    for path in summary["pngs"]:
        typer.echo(f"png: {path}")
    typer.echo(f"json: {out / 'explanation.json'}")


def register(app: typer.Typer) -> None:
    """Add ``explain``, ``explain-sanity`` and ``explain-segmentation`` to the ``radgate`` app."""
    app.command("explain")(explain_command)
    app.command("explain-sanity")(sanity_command)
    app.command("explain-segmentation")(segmentation_command)
