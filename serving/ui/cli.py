"""``radgate ui``: the reviewer web UI on its own (no Ray)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]


def ui(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8600, help="Port to listen on."),
    demo: bool = typer.Option(True, "--demo/--no-demo", help="Build the demo case before serving."),
    secure_cookie: bool = typer.Option(
        False, "--secure-cookie", help="Mark the sign-in cookie Secure (behind HTTPS)."
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate: serve HTTPS only."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="PEM CAs of client certificates (optional)."),
) -> None:
    """Serve the reviewer web UI at http://HOST:PORT/ui (sign in with your RadGate token); with
    --tls-cert/--tls-key over HTTPS only, with HSTS and Secure cookies."""
    import uvicorn

    from governance.tls import ServerTls, TransportSecurity
    from serving.ui import create_ui_app
    from serving.ui.cases import demo_case

    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    tls = (
        ServerTls(certificate=tls_cert, private_key=tls_key, ca_file=tls_ca)
        if tls_cert is not None and tls_key is not None
        else None
    )
    if demo:
        typer.echo("Preparing the demo case (Captum maps on a synthetic radiograph)...")
        demo_case()
    app = create_ui_app(secure_cookie=secure_cookie or tls is not None)
    scheme = "https" if tls is not None else "http"
    typer.echo(f"RadGate UI on {scheme}://{host}:{port}/ui")
    uvicorn.run(
        TransportSecurity(app) if tls is not None else app,
        host=host,
        port=port,
        log_level="warning",
        **(tls.uvicorn_options() if tls is not None else {}),
    )


def register(app: typer.Typer) -> None:
    app.command("ui", help="Serve the reviewer web UI (models, approvals, audit, cases, drift).")(ui)
