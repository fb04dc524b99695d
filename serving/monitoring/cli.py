"""``radgate monitor ...`` (drift checks, reference profiles, replay) and ``radgate feedback ...``."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

import typer

from governance.cli_support import fail

__all__ = ["register"]

monitor_app = typer.Typer(help="Drift of live requests against the training reference; reports and alerts.")
feedback_app = typer.Typer(help="Clinician feedback on served predictions, and labels for the next dataset.")


def _use_settings_mlflow() -> None:
    """MLflow resolves ``models:/m-...`` sources through the process-wide URIs: point them at ours."""
    import mlflow

    from governance.settings import get_settings

    uri = get_settings().resolved_mlflow_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


@monitor_app.command("drift")
def drift(
    name: str = typer.Argument(..., help="Registered model name."),
    window: str | None = typer.Option(None, "--window", help="Live window: 30m, 6h, 1d, 2w."),
    version: str | None = typer.Option(None, "--version", help="Model version (default: the latest served)."),
    out: Path | None = typer.Option(None, "--out", help="Report folder (default under RADGATE_HOME)."),
    config: Path | None = typer.Option(None, "--config", help="Monitoring YAML."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report."),
    fail_on_drift: bool = typer.Option(False, "--fail-on-drift", help="Exit 3 when an alert is raised."),
    all_plots: bool = typer.Option(False, "--all-plots", help="Plot every feature, not only drifted ones."),
) -> None:
    """Test each feature for drift, write drift.json + drift.html (PNG plots), alert past thresholds."""
    from rich.console import Console
    from rich.table import Table

    from serving.monitoring.config import MonitoringConfigError, load_monitoring_config
    from serving.monitoring.job import run_drift_check
    from serving.monitoring.live import MonitoringError

    try:
        check = run_drift_check(
            name,
            window=window,
            version=version,
            out_dir=out,
            config=load_monitoring_config(config),
            actor="radgate-cli",
            all_plots=all_plots,
        )
    except (MonitoringError, MonitoringConfigError, FileNotFoundError, LookupError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(check.report, indent=2, sort_keys=True))
    else:
        table = Table(
            title=f"{name} v{check.version}: {check.result.n_live} live vs "
            f"{check.result.n_reference} reference"
        )
        for column in ("feature", "test", "p adj", "effect", "drift"):
            table.add_column(column)
        for t in check.result.tests:
            table.add_row(
                t.feature,
                t.test,
                "" if t.skipped else f"{t.p_adjusted:.3g}",
                "" if t.skipped else f"{t.effect_name}={t.effect:.3g}",
                "DRIFT" if t.drifted else (t.skipped or ""),
            )
        Console().print(table)
        verdict = "ALERT: drift in " + ", ".join(check.result.drifted_features) if check.alert else "no alert"
        if check.result.insufficient:
            verdict = "insufficient data (fewer live requests than drift.min_samples)"
        typer.echo(verdict)
        typer.echo(f"report: {check.paths['html']} and {check.paths['json']}")
    if check.alert and fail_on_drift:
        raise typer.Exit(3)


@monitor_app.command("profile")
def profile(
    ref: str = typer.Argument(..., help="Model version: NAME/VERSION or NAME@ALIAS."),
    recompute: bool = typer.Option(False, "--recompute", help="Compute again even if the run has one."),
) -> None:
    """Compute and log the reference profile of a version whose training run has none."""
    from serving.monitoring.served import ensure_reference_profile

    _use_settings_mlflow()
    try:
        prof, computed = ensure_reference_profile(ref, recompute=recompute)
    except (LookupError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    state = "computed and logged" if computed else "already logged"
    typer.echo(
        f"reference profile of {ref} {state}: {prof.n_images} images, {prof.embedding_dims}-d embedding"
    )


@monitor_app.command("replay")
def replay(
    ref: str = typer.Argument(..., help="Model version: NAME/VERSION or NAME@ALIAS."),
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders to send as requests."),
    shift: str = typer.Option("none", "--shift", help="Synthetic shift: none|intensity|manufacturer."),
    keep_inputs: bool = typer.Option(False, "--keep-inputs", help="Seal inputs for later feedback."),
) -> None:
    """Predict files as served requests would be and record their live features (demo and tests)."""
    from pydicom.errors import InvalidDicomError

    from imaging.ingest import iter_files
    from serving.approved import load_approved
    from serving.monitoring.live import LiveRecorder
    from serving.monitoring.served import observe_dicom, shift_dicom

    _use_settings_mlflow()
    try:
        model = load_approved(ref)  # replaying a revoked or unapproved model is refused
        recorder = LiveRecorder.for_run(model.name, model.version, str(model.run_id))
    except (LookupError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    count = skipped = 0
    for path in iter_files(paths):
        try:
            data = shift_dicom(path.read_bytes(), shift)
            observation = observe_dicom(model, recorder, uuid.uuid4().hex, data, keep_input=keep_inputs)
        except (InvalidDicomError, AttributeError, ValueError):  # not an image DICOM
            skipped += 1
            continue
        count += 1
        if keep_inputs:
            typer.echo(f"{observation.request_id} {observation.predicted_label}")
    typer.echo(
        f"recorded {count} requests for {model.name} v{model.version} (shift: {shift}); "
        f"{skipped} files skipped (not image DICOM)"
    )


@feedback_app.command("submit")
def submit(
    request_id: str = typer.Argument(..., help="The request id serving returned."),
    agree: bool = typer.Option(..., "--agree/--disagree", help="Is the prediction right?"),
    label: str | None = typer.Option(None, "--label", help="Corrected label (with --disagree)."),
    comment: str | None = typer.Option(None, "--comment", help="Free text (stored sealed)."),
    token: str | None = typer.Option(None, "--token", help="Token (default RADGATE_TOKEN)."),
) -> None:
    """Give feedback on a served prediction (clinical-reviewer role), as POST /v1/feedback does."""
    from pydantic import ValidationError

    from governance.auth import AuthError, principal_from_env_or_token
    from serving.monitoring.feedback import FeedbackIn, submit_feedback
    from serving.monitoring.live import MonitoringError

    try:
        principal = principal_from_env_or_token(token)
        body = FeedbackIn(request_id=request_id, agree=agree, corrected_label=label, comment=comment)
        out = submit_feedback(principal, body)
    except AuthError as exc:
        raise fail(str(exc), 1) from exc
    except ValidationError as exc:
        raise fail(f"invalid feedback: {exc.errors()[0]['msg']}") from exc
    except MonitoringError as exc:
        raise fail(str(exc)) from exc
    typer.echo(
        f"feedback {out.feedback_id}: {out.model} v{out.model_version} label {out.label}; "
        f"input {out.input_status.value}"
    )


@feedback_app.command("export")
def export(
    name: str = typer.Argument(..., help="Registered model name."),
    out: Path = typer.Option(..., "--out", help="Labels CSV to write (sha256,label)."),
    since: datetime | None = typer.Option(None, "--since", help="Only feedback from this UTC time on."),
) -> None:
    """Write feedback labels keyed by de-identified content hash (for `radgate dataset create`)."""
    from serving.monitoring.feedback import export_feedback_labels
    from serving.monitoring.live import MonitoringError

    try:
        report = export_feedback_labels(name, out, since=since)
    except MonitoringError as exc:
        raise fail(str(exc)) from exc
    typer.echo(
        f"wrote {report.rows} labels to {out} ({report.without_input} feedback without a kept "
        f"input, {report.conflicts} cases where reviewers disagree left out)"
    )


@feedback_app.command("dataset")
def dataset(
    name: str = typer.Argument(..., help="Registered model name."),
    new_name: str = typer.Option(..., "--name", help="Name of the new dataset version."),
    base: str | None = typer.Option(None, "--base", help="Base dataset (default: the served version's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split."),
    hold_out_test: bool = typer.Option(
        False, "--hold-out-test", help="Leave the base's test patients out (a fixed test set)."
    ),
) -> None:
    """Make the next dataset version: the base dataset's labels plus feedback labels (feedback wins)."""
    from imaging.datasets import DatasetError
    from serving.monitoring.feedback import feedback_dataset
    from serving.monitoring.live import MonitoringError

    try:
        report = feedback_dataset(
            name, new_name, base=base, seed=seed, hold_out="test" if hold_out_test else None
        )
    except (MonitoringError, DatasetError, LookupError) as exc:
        raise fail(str(exc)) from exc
    version = report.version
    state = "created" if report.created else "already exists"
    typer.echo(f"dataset {version.name}@{version.short_id} {state}: {len(version.manifest.items)} instances")


def retrain_command(
    name: str = typer.Argument(..., help="Registered model name."),
    alias: str = typer.Option("production", "--alias", help="Champion alias (its config is reused)."),
    version: str | None = typer.Option(None, "--version", help="Champion version (instead of --alias)."),
    dataset_name: str | None = typer.Option(None, "--dataset-name", help="Name of the new dataset version."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value: key.path=value."),
    token: str | None = typer.Option(None, "--token", help="Token (default RADGATE_TOKEN)."),
) -> None:
    """Retrain on the champion's dataset plus feedback labels; register a pending version and log a
    champion/challenger comparison on a fixed test split to MLflow (ml-engineer role)."""
    from governance.auth import AuthError, principal_from_env_or_token
    from imaging.datasets import DatasetError
    from serving.monitoring.live import MonitoringError
    from serving.monitoring.retrain import retrain
    from training.config import ConfigError

    _use_settings_mlflow()
    try:
        principal = principal_from_env_or_token(token)
        outcome = retrain(
            principal, name, alias=alias, version=version, dataset_name=dataset_name, overrides=overrides
        )
    except AuthError as exc:
        raise fail(str(exc), 1) from exc
    except (MonitoringError, DatasetError, ConfigError, LookupError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(
        f"dataset {outcome.dataset_version[:12]}; registered {name} version "
        f"{outcome.challenger_version} (pending review); run {outcome.run_id}"
    )
    typer.echo(json.dumps(outcome.comparison, indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")
    app.add_typer(feedback_app, name="feedback")
    app.command("retrain")(retrain_command)
