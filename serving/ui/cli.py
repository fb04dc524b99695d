"""``radgate ui``: the reviewer web UI on its own (no Ray)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def ui(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8600, help="Port to listen on."),
    demo: bool = typer.Option(True, "--demo/--no-demo", help="Build the demo case before serving."),
    secure_cookie: bool = typer.Option(
        False, "--secure-cookie", help="Mark the sign-in cookie Secure (behind HTTPS)."
    ),
) -> None:
    """Serve the reviewer web UI at http://HOST:PORT/ui (sign in with your RadGate token)."""
    import uvicorn

    from serving.ui import create_ui_app
    from serving.ui.cases import demo_case

    if demo:
        typer.echo("Preparing the demo case (Captum maps on a synthetic radiograph)...")
        demo_case()
    typer.echo(f"RadGate UI on http://{host}:{port}/ui")
    uvicorn.run(create_ui_app(secure_cookie=secure_cookie), host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("ui", help="Serve the reviewer web UI (models, approvals, audit, cases, drift).")(ui)
