"""React to MLflow registry webhooks: an alias set outside RadGate is reported (and removed).

With a tracking server, MLflow posts ``model_version_alias.created`` to RadGate as soon as
anyone sets an alias (UI, API, another tool). The receiver checks the HMAC signature and the
timestamp, asks the gate about that alias, and when it is not allowed writes
``model.alias_invalid`` to the audit log and, when enforcing, deletes the alias. The gate
still denies such an alias on its own at every request; this makes the event visible at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request

from governance.approvals.gate import Gate
from governance.approvals.registry import model_target, registry_client
from governance.audit import AuditLog

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "ALIAS_EVENTS",
    "WEBHOOK_ACTOR",
    "WEBHOOK_SECRET_ENV",
    "WebhookSignatureError",
    "create_webhook_app",
    "handle_event",
    "register_webhook",
    "verify_signature",
]

WEBHOOK_SECRET_ENV = "RADGATE_WEBHOOK_SECRET"
WEBHOOK_ACTOR = "mlflow-webhook"
ALIAS_EVENTS = ["model_version_alias.created"]
_MAX_AGE_S = 300


class WebhookSignatureError(ValueError):
    """The delivery is unsigned, wrongly signed or too old (replay)."""


def verify_signature(
    secret: str, delivery_id: str, timestamp: str, payload: bytes, signature: str, *, now: float | None = None
) -> None:
    """Check MLflow's ``X-MLflow-Signature`` (``v1,base64(HMAC-SHA256(id.ts.payload))``)."""
    if not signature or not signature.startswith("v1,"):
        raise WebhookSignatureError("missing or unsupported signature")
    try:
        age = abs((now or time.time()) - int(timestamp))
    except ValueError as exc:
        raise WebhookSignatureError("bad timestamp") from exc
    if age > _MAX_AGE_S:
        raise WebhookSignatureError("delivery too old (possible replay)")
    signed = f"{delivery_id}.{timestamp}.".encode() + payload
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, signature[3:]):
        raise WebhookSignatureError("signature mismatch")


def handle_event(event: dict[str, Any], *, gate: Gate, audit: AuditLog, enforce: bool) -> dict[str, Any]:
    """Check an alias-created event; audit and (if ``enforce``) delete an invalid alias."""
    if (event.get("entity"), event.get("action")) != ("model_version_alias", "created"):
        return {"ignored": True}
    data = event.get("data") or {}
    name, alias, version = str(data.get("name", "")), str(data.get("alias", "")), str(data.get("version", ""))
    if not (name and alias and version):
        return {"ignored": True}
    decision = gate(name, alias, fresh=True)
    if decision.allowed:
        return {"allowed": True}
    target = model_target(name, decision.version or version)
    audit.append(
        WEBHOOK_ACTOR,
        "model.alias_invalid",
        target,
        {"alias": alias, "reasons": decision.reasons[:10]},
        role="system",
    )
    removed = False
    if enforce and decision.version == version:
        from mlflow.exceptions import MlflowException

        try:
            gate.client.delete_registered_model_alias(name, alias)
            removed = True
            audit.append(
                WEBHOOK_ACTOR, "model.demote", target, {"alias": alias, "reason": "invalid"}, role="system"
            )
        except MlflowException:
            removed = False
    return {"allowed": False, "reasons": decision.reasons, "alias_removed": removed}


def create_webhook_app(
    secret: str | None = None, *, enforce: bool = True, client: MlflowClient | None = None
) -> FastAPI:
    """A FastAPI app receiving MLflow webhooks at ``POST /mlflow/webhook``."""
    secret = secret or os.environ.get(WEBHOOK_SECRET_ENV)
    if not secret:
        raise WebhookSignatureError(f"a webhook secret is required ({WEBHOOK_SECRET_ENV})")
    app = FastAPI(title="RadGate MLflow webhook receiver")
    state: dict[str, Any] = {}

    def components() -> tuple[Gate, AuditLog]:
        if "gate" not in state:
            state["audit"] = AuditLog()
            state["gate"] = Gate(client or registry_client(), state["audit"], ttl_s=0)
        return state["gate"], state["audit"]

    @app.post("/mlflow/webhook")
    async def receive(request: Request) -> dict[str, Any]:
        payload = await request.body()
        try:
            verify_signature(
                secret,
                request.headers.get("X-MLflow-Delivery-Id", ""),
                request.headers.get("X-MLflow-Timestamp", ""),
                payload,
                request.headers.get("X-MLflow-Signature", ""),
            )
            event = json.loads(payload)
        except (WebhookSignatureError, ValueError) as exc:
            raise HTTPException(401, detail=str(exc)) from exc
        gate, audit = components()
        return handle_event(event, gate=gate, audit=audit, enforce=enforce)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def register_webhook(
    url: str, secret: str, *, client: MlflowClient | None = None, name: str = "radgate-gate"
) -> str:
    """Register the receiver with the MLflow tracking server; returns the webhook id."""
    from mlflow.entities.webhook import WebhookAction, WebhookEntity, WebhookEvent

    client = client or registry_client()
    events: list[Any] = [WebhookEvent(WebhookEntity.MODEL_VERSION_ALIAS, WebhookAction.CREATED)]
    hook = client.create_webhook(name=name, url=url, events=events, secret=secret)
    return str(hook.webhook_id)
