"""``radgate certs dev``: a local CA and the server and client certificates the demo and the
tests use for DICOM TLS and HTTPS (``governance.tls``). A hospital uses its own PKI instead."""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["register"]

certs_app = typer.Typer(help="TLS certificates.", no_args_is_help=True)


@certs_app.command("dev")
def certs_dev(
    directory: Path = typer.Option(Path(".radgate/tls"), "--dir", help="Where the PEM files are written."),
    name: list[str] = typer.Option(
        ["localhost", "127.0.0.1"], "--name", help="DNS name or IP address of the server (repeat)."
    ),
    days: int = typer.Option(365, min=1, max=3650, help="Validity of the certificates."),
    service: list[str] = typer.Option(
        [],
        "--service",
        help="Also a certificate of its own for this service (SERVICE.pem, SERVICE-key.pem; DNS "
        "SERVICE, localhost, 127.0.0.1); with a CA already in --dir, only the missing ones (repeat).",
    ),
    force: bool = typer.Option(False, help="Replace certificates already in --dir."),
) -> None:
    """Make a development CA (ca.pem), a server certificate for --name (server.pem, also valid
    as a DICOM client) and a client certificate (client.pem), keys 0600 beside them. Prints
    the paths as one JSON line."""
    from governance.tls import issue_service_certificates, make_dev_certificates

    paths: dict[str, str] = {}
    if (directory / "ca.pem").exists() and not force:
        if not service:
            typer.echo(f"error: {directory} already holds a CA (--force to replace it)", err=True)
            raise typer.Exit(1)
    else:
        paths.update(make_dev_certificates(directory, names=tuple(name), days=days).as_dict())
    for each, (certificate, key) in issue_service_certificates(directory, tuple(service), days=days).items():
        paths[f"{each}_certificate"], paths[f"{each}_key"] = str(certificate), str(key)
    typer.echo(json.dumps(paths))


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
