"""One served prediction end to end, for ``radgate demo``'s serving stage.

``predict_once(model, dicom, token=...)`` starts Ray Serve locally with one model at
``@production`` (behind the gate, exactly as ``radgate serve`` does), posts one DICOM instance
with the caller's bearer token, returns the JSON answer and shuts Serve down. The model must
have been approved and promoted first (``governance.approvals.Workflow``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

__all__ = ["ServingDemoError", "predict_once"]


class ServingDemoError(RuntimeError):
    """The served prediction did not succeed (the message has the HTTP status and reason)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def predict_once(
    model: str,
    dicom: Path,
    *,
    token: str,
    alias: str = "production",
    explain: str = "gradcam",
    num_cpus: int = 2,
) -> dict[str, Any]:
    """Serve ``model@alias``, predict ``dicom`` once (with an explanation), stop; return the JSON."""
    import httpx
    import ray
    from ray import serve

    from serving.app import run
    from serving.config import ServeConfig

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = _free_port()
    config = ServeConfig.model_validate(
        {"port": port, "ingress_num_cpus": 0, "models": [{"name": model, "alias": alias, "num_cpus": 1}]}
    )
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=num_cpus, include_dashboard=False)
    try:
        run(config)
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/{model}/predict",
            params={"explain": explain},
            content=Path(dicom).read_bytes(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"},
            timeout=300,
        )
        if reply.status_code != 200:
            detail = (
                reply.json().get("detail", "")
                if reply.headers.get("content-type", "").startswith("application/json")
                else ""
            )
            raise ServingDemoError(f"serving answered {reply.status_code}: {detail}")
        result: dict[str, Any] = reply.json()
        return result
    finally:
        serve.shutdown()
        if started_ray:
            ray.shutdown()
