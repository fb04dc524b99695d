"""``radgate serve [CONFIG]`` and ``radgate triton export|start``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

__all__ = ["register"]

triton_app = typer.Typer(
    help="NVIDIA Triton: export approved models, run a local tritonserver.", no_args_is_help=True
)


def serve(
    config: Path | None = typer.Argument(
        None, help="Serving config YAML (default configs/serve/default.yaml)."
    ),
    host: str | None = typer.Option(None, help="Override the config's HTTP host."),
    port: int | None = typer.Option(None, help="Override the config's HTTP port."),
    num_cpus: int | None = typer.Option(None, help="CPUs for a local Ray (default: all)."),
    fhir_url: str | None = typer.Option(
        None,
        "--fhir-url",
        help="POST each result as a FHIR R4 transaction Bundle to this server "
        "(token from RADGATE_FHIR_TOKEN; https, or http on loopback).",
    ),
) -> None:
    """Start the Ray Serve app (FastAPI ingress + one deployment per model) behind the gate."""
    from pydantic import ValidationError

    from serving.config import ServeConfigError, load_serve_config
    from serving.interop import FhirConfig

    try:
        settings = load_serve_config(config, host=host, port=port)
        if fhir_url is not None:
            current = settings.fhir.model_dump() if settings.fhir else {}
            fhir = FhirConfig.model_validate({**current, "url": fhir_url})
            settings = settings.model_copy(update={"fhir": fhir})
    except ValidationError as exc:
        typer.echo(f"error: --fhir-url: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(2) from exc
    except ServeConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    from serving.app import run

    try:
        run(settings, num_cpus=num_cpus)
    except RuntimeError as exc:  # Ray Serve deploy failures
        typer.echo(f"error: serving did not start: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"RadGate serving on http://{settings.host}:{settings.port} (models: "
        + ", ".join(m.ref for m in settings.models)
        + "); Ctrl-C or SIGTERM stops it"
    )
    _report_models(settings.host, settings.port)
    # After ray.init, which installs its own SIGTERM handler: ours shuts Serve down cleanly.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    import ray
    from ray import serve as ray_serve

    typer.echo("stopping")
    ray_serve.shutdown()
    ray.shutdown()


def _report_models(host: str, port: int) -> None:
    from ray import serve as ray_serve

    try:
        status = ray_serve.status()
        for name, app in status.applications.items():
            typer.echo(f"application {name}: {app.status}")
    except (RuntimeError, AttributeError):
        return


def serve_ae(
    model: str = typer.Option(..., "--model", help="Served model name the instances go to."),
    url: str = typer.Option("http://127.0.0.1:8000", help="The serving API (radgate serve)."),
    ae_title: str = typer.Option("RADGATE-AI", help="This SCP's AE title."),
    host: str = typer.Option("127.0.0.1", help="Listen address."),
    port: int = typer.Option(11113, help="Listen port."),
    allow: list[str] = typer.Option([], "--allow", help="Calling AE titles allowed (repeat); default any."),
    tls_cert: Path | None = typer.Option(
        None, help="DICOM TLS: this SCP's PEM certificate (with --tls-key)."
    ),
    tls_key: Path | None = typer.Option(None, help="DICOM TLS: its PEM private key."),
    tls_ca: Path | None = typer.Option(
        None, help="DICOM TLS: CAs of peers; their certificates are then required."
    ),
    serve_ca: Path | None = typer.Option(None, help="CA file to verify the serving API's HTTPS certificate."),
    token: str | None = typer.Option(
        None, "--token", help="A pacs-client token, presented to the serving API (default: RADGATE_TOKEN)."
    ),
) -> None:
    """Inference AE: a C-STORE SCP whose instances are predicted and the results pushed back to
    the PACS of the serving config (as a pacs-client user: --token, RADGATE_TOKEN or
    RADGATE_TOKEN_FILE; prefer the file: a command line is visible to other users of the host).
    With --tls-cert/--tls-key it speaks DICOM TLS only (BCP 195); with --tls-ca, mutual TLS."""
    from governance.auth import AuthError, resolve_token
    from governance.tls import TlsConfigError, server_context
    from serving.inference_ae import InferenceAE

    try:
        token = resolve_token(token)
    except AuthError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from exc
    if not token:
        typer.echo("error: pass --token or set RADGATE_TOKEN to a pacs-client token", err=True)
        raise typer.Exit(3)
    tls = None
    if tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None:
            typer.echo("error: --tls-cert and --tls-key go together", err=True)
            raise typer.Exit(2)
        try:
            tls = server_context(tls_cert, tls_key, tls_ca, require_client_certificate=tls_ca is not None)
        except TlsConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    try:
        node = InferenceAE(
            serve_url=url,
            model=model,
            token=token,
            ae_title=ae_title,
            host=host,
            port=port,
            allowed_aes=set(allow) or None,
            tls=tls,
            serve_ca_file=str(serve_ca) if serve_ca else None,
        ).start()
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc
    mode = "one request per series on association release" if node.series_mode else "one request per instance"
    typer.echo(f"inference AE {ae_title} on {host}:{port} -> {url} ({model}; {mode})")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    node.stop()


@triton_app.command("export")
def export(
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION (must be approved)."),
    repo: Path = typer.Option(..., "--repo", help="Triton model repository directory."),
    backend: str = typer.Option("python", help="python (CPU here), pytorch or onnxruntime (NGC image)."),
    max_batch_size: int = typer.Option(32, help="Triton max_batch_size (dynamic batching)."),
    gpu: bool = typer.Option(False, help="instance_group KIND_GPU."),
) -> None:
    """Write a Triton model repository for an approved version (refuses unapproved ones)."""
    from serving.triton.export import TritonBackendKind, TritonExportError, export_repository

    try:
        kind = TritonBackendKind(backend)
    except ValueError as exc:
        typer.echo(f"error: unknown backend {backend!r} (python, pytorch, onnxruntime)", err=True)
        raise typer.Exit(2) from exc
    try:
        result = export_repository(ref, repo, backend=kind, max_batch_size=max_batch_size, gpu=gpu)
    except TritonExportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from exc
    typer.echo(f"exported {result.name} v{result.version} ({result.backend.value}) to {result.model_dir}")


@triton_app.command("publish")
def publish_command(
    ref: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION (must be approved)."),
    repo: Path = typer.Option(..., "--repo", help="Triton model repository (read-only to Triton)."),
    max_batch_size: int = typer.Option(32, help="Triton max_batch_size (dynamic batching)."),
) -> None:
    """Export an approved version into Triton's repository and record its files' hashes in a
    signed audit entry: serving loads it (explicit model control) only from bytes that match."""
    from governance.auth.access import acting_principal
    from serving.triton.client import TritonModelMismatch
    from serving.triton.export import TritonExportError
    from serving.triton.publish import publish

    principal = acting_principal()
    if principal is None:
        typer.echo("error: not authenticated", err=True)
        raise typer.Exit(3)
    try:
        done = publish(
            ref, repo, actor=principal.name, role=principal.role.value, max_batch_size=max_batch_size
        )
    except (TritonExportError, TritonModelMismatch) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from exc
    typer.echo(
        f"published {done.export.name} v{done.export.version} to {done.export.model_dir}"
        f" (audit entry {done.audit_seq})"
    )


@triton_app.command("start")
def start(
    repo: Path = typer.Option(..., "--repo", help="Triton model repository directory."),
    grpc_port: int = typer.Option(8001, help="gRPC port (serving's triton_url)."),
    http_port: int = typer.Option(8002, help="HTTP port (health)."),
    work_dir: Path = typer.Option(Path(".radgate/triton"), help="Backend directory and log."),
    tls_cert: Path | None = typer.Option(None, help="gRPC over TLS: this server's certificate (PEM)."),
    tls_key: Path | None = typer.Option(None, help="gRPC over TLS: its private key (PEM)."),
    tls_ca: Path | None = typer.Option(None, help="Mutual TLS: the CA of the clients' certificates."),
) -> None:
    """Run the tritonserver binary of nvidia-pytriton on 127.0.0.1 until SIGTERM or Ctrl-C.
    With --tls-cert/--tls-key its gRPC endpoint speaks TLS only (mutual with --tls-ca)."""
    from pydantic import ValidationError

    from governance.tls import ServerTls
    from serving.triton.server import TritonNotInstalled, TritonServer

    tls = None
    if tls_cert is not None or tls_key is not None or tls_ca is not None:
        try:
            tls = ServerTls.model_validate(
                {
                    "certificate": tls_cert,
                    "private_key": tls_key,
                    "ca_file": tls_ca,
                    "require_client_certificate": tls_ca is not None,
                }
            )
        except ValidationError as exc:
            typer.echo("error: --tls-cert and --tls-key go together (--tls-ca needs both)", err=True)
            raise typer.Exit(2) from exc
    try:
        server = TritonServer(repo, work_dir, http_port=http_port, grpc_port=grpc_port, tls=tls).start()
    except (TritonNotInstalled, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"tritonserver ready: gRPC {server.grpc_url}, HTTP {server.http_url}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("serve-ae")(serve_ae)
    from serving.batch_cli import predict  # Typer only: the work's imports wait for the command

    app.command("predict")(predict)
    app.add_typer(triton_app, name="triton")
