"""Commands: ``radgate gateway`` (C-STORE SCP + STOW-RS), ``radgate pull``, ``radgate push``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["register"]

_CONFIG_HELP = "Gateway YAML (default: $RADGATE_GATEWAY_CONFIG or configs/gateway/gateway.yaml)."


def _load(config: Path | None):  # type: ignore[no-untyped-def]
    from imaging.gateway.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _sink():  # type: ignore[no-untyped-def]
    from imaging.gateway.sink import default_sink

    return default_sink()


def gateway(
    config: Path | None = typer.Option(None, "--config", "-c", help=_CONFIG_HELP),
    ae_title: str | None = typer.Option(None, help="Override the SCP's AE title."),
    dicom_port: int | None = typer.Option(None, help="Override the DICOM port (0: any free port)."),
    http_port: int | None = typer.Option(None, help="Override the STOW-RS port (0: any free port)."),
    no_http: bool = typer.Option(False, "--no-http", help="Run the C-STORE SCP only."),
    workers: int | None = typer.Option(None, min=1, help="SCP worker processes (default: config)."),
) -> None:
    """Run the intake gateway: C-STORE/C-ECHO SCP and DICOMweb STOW-RS, until SIGTERM (drains)."""
    from imaging.gateway.service import GatewayService

    cfg = _load(config)
    dicom = cfg.dicom.model_copy(
        update={
            k: v
            for k, v in {"ae_title": ae_title, "port": dicom_port, "workers": workers}.items()
            if v is not None
        }
    )
    port = http_port if http_port is not None else cfg.http.port
    http = cfg.http.model_copy(update={"port": port, "enabled": cfg.http.enabled and not no_http})
    cfg = cfg.model_copy(update={"dicom": dicom, "http": http})
    if not dicom.allow_any and not dicom.allowed_peers:
        typer.echo("warning: no calling AE title is allowed (dicom.allowed_peers is empty)", err=True)
    try:
        service = GatewayService(cfg, _sink)
        final = service.run_forever()
    except OSError as exc:
        typer.echo(f"error: cannot listen: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if final.get("failed_worker"):
        raise typer.Exit(1)


def pull(
    pacs: str = typer.Option(..., "--pacs", help="Name of a PACS in the gateway configuration."),
    study: list[str] = typer.Option([], "--study", help="Study Instance UID to pull (repeatable)."),
    query: list[str] = typer.Option([], "--query", help="QIDO-RS filter KEY=VALUE (repeatable)."),
    config: Path | None = typer.Option(None, "--config", "-c", help=_CONFIG_HELP),
    method: str = typer.Option(
        "auto",
        help="dicomweb (QIDO-RS + WADO-RS), dimse (C-FIND + C-GET), cmove (C-FIND + C-MOVE to the "
        "running gateway) or auto (DICOMweb if configured, else dimse).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Find studies on a PACS and ingest them (DICOMweb or DIMSE); resumable, with progress."""
    from rich.progress import Progress

    from imaging.gateway.config import ConfigError
    from imaging.gateway.pull import PullError, PullMethod
    from imaging.gateway.pull import pull as run_pull

    try:
        chosen = PullMethod(method)
    except ValueError as exc:
        typer.echo("error: --method is dicomweb, dimse, cmove or auto", err=True)
        raise typer.Exit(2) from exc

    if not study and not query:
        typer.echo("error: give --study UID or --query KEY=VALUE", err=True)
        raise typer.Exit(2)
    filters: dict[str, str] = {}
    for item in query:
        key, sep, value = item.partition("=")
        if not sep or not key:
            typer.echo(f"error: --query expects KEY=VALUE, got {item!r}", err=True)
            raise typer.Exit(2)
        filters[key] = value
    cfg = _load(config)
    try:
        peer = cfg.peer(pacs)
        with Progress(transient=True, disable=as_json) as progress:
            task = progress.add_task(f"pull from {pacs}", total=None)
            report = run_pull(
                peer,
                _sink(),
                studies=study,
                filters=filters or None,
                on_total=lambda n: progress.update(task, total=n),
                on_instance=lambda _: progress.advance(task),
                method=chosen,
                calling_ae=cfg.dicom.ae_title,
            )
    except (ConfigError, PullError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    summary = report.as_dict()
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(", ".join(f"{k}: {v}" for k, v in summary.items()))
    if report.errors:
        raise typer.Exit(1)


def push(
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders to send.", exists=True),
    pacs: str = typer.Option(..., "--pacs", help="Name of a PACS in the gateway configuration."),
    config: Path | None = typer.Option(None, "--config", "-c", help=_CONFIG_HELP),
    calling_ae: str | None = typer.Option(None, help="Calling AE title (default: the gateway's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """C-STORE DICOM objects (e.g. AI results) to a configured PACS."""
    from imaging.gateway.config import ConfigError
    from imaging.gateway.push import PushError, push_files

    cfg = _load(config)
    try:
        report = push_files(cfg.peer(pacs), paths, calling_ae=calling_ae or cfg.dicom.ae_title)
    except (ConfigError, PushError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    summary = {"sent": report.sent, "failed": len(report.failed), "skipped": len(report.skipped)}
    typer.echo(json.dumps(summary) if as_json else ", ".join(f"{k}: {v}" for k, v in summary.items()))
    for path, status in report.failed:
        typer.echo(f"failed: {path} (status 0x{status:04X})", err=True)
    for path, why in report.skipped:
        typer.echo(f"skipped: {path} ({why})", err=True)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("gateway")(gateway)
    app.command("pull")(pull)
    app.command("push")(push)
