"""One served prediction end to end, for ``radgate demo``'s serving stage.

``predict_once(model, dicom, token=...)`` starts Ray Serve locally with one model at
``@production`` (behind the gate, exactly as ``radgate serve`` does), posts one DICOM instance
with the caller's bearer token, returns the JSON answer and shuts Serve down. The model must
have been approved and promoted first (``governance.approvals.Workflow``).
``segment_series_once(model, files, ...)`` does the same with one series for a segmentation
model and also returns its DICOM SEG and SR (pushed to a PACS when one is given).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.methods import OVERLAY
from serving.net import free_port

if TYPE_CHECKING:
    from imaging.gateway.config import PacsPeer

__all__ = ["ServingDemoError", "predict_once", "segment_series_once", "served"]


class ServingDemoError(RuntimeError):
    """The served prediction did not succeed (the message has the HTTP status and reason)."""


@contextmanager
def served(
    model: str,
    *,
    alias: str = "production",
    num_cpus: int = 2,
    pacs: PacsPeer | None = None,
    model_options: dict[str, Any] | None = None,
) -> Iterator[str]:
    """Serve ``model@alias`` on a free local port (results pushed to ``pacs`` on request;
    ``model_options``: more ``ServedModel`` fields, e.g. the Triton backend); yields the base URL
    and shuts Serve (and the Ray it started) down afterwards."""
    import ray
    from ray import serve

    from serving.app import run, start_ray
    from serving.config import ServeConfig

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = free_port()
    settings: dict[str, Any] = {
        "port": port,
        "ingress_num_cpus": 0,
        "models": [{"name": model, "alias": alias, "num_cpus": 1, **(model_options or {})}],
    }
    if pacs is not None:
        settings["pacs"] = pacs.model_dump()
    config = ServeConfig.model_validate(settings)
    started_ray = not ray.is_initialized()
    if started_ray:
        start_ray(config, num_cpus=num_cpus)
    try:
        run(config)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        if started_ray:
            ray.shutdown()


def _checked(reply: Any) -> Any:
    if reply.status_code != 200:
        detail = (
            reply.json().get("detail", "")
            if reply.headers.get("content-type", "").startswith("application/json")
            else ""
        )
        raise ServingDemoError(f"serving answered {reply.status_code}: {detail}")
    return reply


def predict_once(
    model: str,
    dicom: Path,
    *,
    token: str,
    alias: str = "production",
    explain: str = OVERLAY,
    num_cpus: int = 2,
) -> dict[str, Any]:
    """Serve ``model@alias``, predict ``dicom`` once (with an explanation), stop; return the JSON."""
    import httpx

    with served(model, alias=alias, num_cpus=num_cpus) as url:
        reply = httpx.post(
            f"{url}/v1/models/{model}/predict",
            params={"explain": explain},
            content=Path(dicom).read_bytes(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"},
            timeout=300,
        )
        result: dict[str, Any] = _checked(reply).json()
        return result


def segment_series_once(
    model: str,
    series: list[Path],
    *,
    token: str,
    alias: str = "production",
    pacs: PacsPeer | None = None,
    num_cpus: int = 2,
) -> tuple[dict[str, Any], list[bytes]]:
    """Serve a segmentation ``model@alias``, post one series (multipart/related) for the JSON
    answer (pushing the SEG + SR to ``pacs`` when given) and for the DICOM results; stop.
    Returns the JSON and the DICOM objects (SEG, SR)."""
    import httpx

    from imaging.gateway.multipart import build_related, content_type_params, iter_parts

    body, content_type = build_related([Path(p).read_bytes() for p in series])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    endpoint = f"/v1/models/{model}/predict"
    with served(model, alias=alias, num_cpus=num_cpus, pacs=pacs) as url:
        params = {"push": "true"} if pacs is not None else {}
        answer: dict[str, Any] = _checked(
            httpx.post(url + endpoint, params=params, content=body, headers=headers, timeout=600)
        ).json()
        reply = _checked(
            httpx.post(
                url + endpoint, params={"response": "dicom"}, content=body, headers=headers, timeout=600
            )
        )
    _, reply_params = content_type_params(reply.headers.get("content-type", ""))
    objects = [part.body for part in iter_parts(reply.content, reply_params.get("boundary", ""))]
    return answer, objects
