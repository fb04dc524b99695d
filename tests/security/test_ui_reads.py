"""The UI: who viewed which patient-derived record is audited, and the audit page verifies the
chain incrementally (and still shows a truncation)."""

from __future__ import annotations

import sqlite3
from typing import Any

from governance.audit import AuditLog
from governance.settings import get_settings
from tests.ui.conftest import case_dir, cast, mlflow_template, registry, ui_client
from tests.ui.test_ui_pages import sign_in

__all__ = ["case_dir", "cast", "mlflow_template", "registry", "ui_client"]


def test_viewing_a_case_and_its_overlay_is_audited(ui_client: Any, cast: Any) -> None:
    sign_in(ui_client, cast.tokens["doc"])
    assert ui_client.get("/ui/cases/demo").status_code == 200
    assert ui_client.get("/ui/api/cases/demo/gradcam").status_code == 200
    views = [(e.actor, e.action, e.target) for e in AuditLog().entries(action="ui.view.")]
    assert ("doc", "ui.view.case", "case:demo") in views
    assert ("doc", "ui.view.overlay", "case:demo/gradcam") in views


def test_audit_page_verifies_incrementally_and_reports_truncation(ui_client: Any, cast: Any) -> None:
    sign_in(ui_client, cast.tokens["auditor"])
    assert "Chain verified" in ui_client.get("/ui/audit").text
    AuditLog().append("svc", "inference", "model:m/1")
    assert "Chain verified" in ui_client.get("/ui/audit").text
    db = sqlite3.connect(get_settings().home / "catalog.db", isolation_level=None)
    newest = db.execute("SELECT max(seq) FROM audit_log").fetchone()[0]
    db.execute("DELETE FROM audit_log WHERE seq >= ?", (newest - 1,))
    page = ui_client.get("/ui/audit").text
    chain = page[page.index('data-testid="chain"') :][:300]
    assert "Chain verification FAILED" in chain and ("deleted" in chain or "truncated" in chain), chain
