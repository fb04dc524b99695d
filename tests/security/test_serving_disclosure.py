"""Serving: unauthenticated floods do not flood the audit log, and a PACS client is not told the
gate's reasons (the audit log keeps them; roles that act on them still see them)."""

from __future__ import annotations

from typing import Any

import pytest

from governance.audit import AuditLog
from tests.unit.test_serving_api import LocalClient, radgate_home, world

__all__ = ["LocalClient", "radgate_home", "world"]


def _auth(world: dict[str, Any], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world['cast'].tokens[who]}"}


def test_a_flood_of_unauthenticated_requests_is_aggregated(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving import api

    # the tally is per process: a window opened by an earlier test would absorb this flood
    monkeypatch.setattr(api, "_REJECTIONS", api._RejectionTally())
    before = len(AuditLog().entries(action="serve.auth.denied"))
    for _ in range(200):
        assert (
            world["client"].get("/v1/models", headers={"Authorization": "Bearer rg_" + "x" * 43}).status_code
            == 401
        )
    written = AuditLog().entries(action="serve.auth.denied")[before:]
    assert 1 <= len(written) <= 2, len(written)  # 200 rejections, not 200 entries
    assert written[0].details["count"] >= 1


def test_gate_reasons_reach_only_roles_that_act_on_them(world: dict[str, Any]) -> None:
    body = world["files"][0].read_bytes()
    headers = {"Content-Type": "application/dicom"}
    as_pacs = world["client"].post(
        "/v1/models/pending-model/predict", content=body, headers={**headers, **_auth(world, "pacs")}
    )
    assert as_pacs.status_code == 403
    assert as_pacs.json()["detail"] == "model not approved for serving"
    entry = AuditLog().entries(action="serve.predict", newest_first=True, limit=5)
    assert any(e.details.get("reasons") for e in entry if e.action == "serve.predict.denied")
