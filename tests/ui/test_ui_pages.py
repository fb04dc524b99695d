"""The reviewer UI through FastAPI's TestClient: sign-in, roles, CSRF, every page, and the
approval workflow through the UI on a real embedded MLflow registry (SQLite)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from governance.approvals import TAG_DECISION_PREFIX, TAG_STATUS, Workflow
from governance.audit import AuditLog
from governance.testing import Cast, create_version
from serving.ui.security import COOKIE
from tests.ui.conftest import record_served_request, write_case

NAME = "cxr-pneumonia"


def sign_in(client: Any, token: str) -> str:
    """Sign in and return the CSRF token of the session (from a rendered page)."""
    client.cookies.clear()
    response = client.post("/ui/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303
    page = client.get(response.headers["location"])
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def submitted(registry: Any, cast: Cast) -> str:
    version, _ = create_version(registry, NAME)
    Workflow(registry).submit(cast["eng"], NAME, version, "ready for review")
    return version


def test_ui_requires_sign_in(ui_client: Any) -> None:
    for path in ("/ui/models", "/ui/audit", "/ui/cases", "/ui/drift", "/ui/cases/demo"):
        response = ui_client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/login"
    assert ui_client.get("/ui/api/cases/demo/gradcam").status_code == 401
    assert "Sign in" in ui_client.get("/ui/login").text


def test_ui_bad_token_refused(ui_client: Any, cast: Cast) -> None:
    response = ui_client.post("/ui/login", data={"token": "rg_" + "x" * 43}, follow_redirects=False)
    assert response.status_code == 401
    assert COOKIE not in response.cookies


def test_ui_cookie_is_httponly_and_strict(ui_client: Any, cast: Cast) -> None:
    response = ui_client.post("/ui/login", data={"token": cast.tokens["doc"]}, follow_redirects=False)
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=strict" in header and "path=/ui" in header
    page = ui_client.get("/ui/login")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_ui_every_page_renders(ui_client: Any, registry: Any, cast: Cast, radgate_home: Path) -> None:
    version = submitted(registry, cast)
    report = radgate_home / "monitoring" / "reports" / NAME / "20260101T000000Z"
    report.mkdir(parents=True)
    (report / "drift.json").write_text(json.dumps({"drifted": True, "plots": {"score": "score.png"}}))
    (report / "score.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    sign_in(ui_client, cast.tokens["doc"])
    pages = {
        "/ui/models": "cxr-pneumonia",
        f"/ui/models/{NAME}/{version}": "Policy checklist",
        "/ui/cases": "Case demo",
        "/ui/cases/demo": "canvas",
        "/ui/drift": "20260101T000000Z",
    }
    for path, text in pages.items():
        response = ui_client.get(path)
        assert response.status_code == 200, path
        assert text in response.text, path
    data = ui_client.get("/ui/api/cases/demo/gradcam").json()
    assert (data["width"], data["height"]) == (32, 32)
    assert ui_client.get(f"/ui/drift/{NAME}/20260101T000000Z/score.png").status_code == 200
    assert ui_client.get(f"/ui/drift/{NAME}/..%2F..%2F/mlflow.db").status_code == 404
    assert ui_client.get("/ui/static/viewer.js").status_code == 200
    assert ui_client.get("/ui/models/nope/1").status_code == 404
    sign_in(ui_client, cast.tokens["auditor"])
    audit = ui_client.get("/ui/audit")
    assert audit.status_code == 200
    assert "Chain verified" in audit.text and "model.submit" in audit.text
    filtered = ui_client.get("/ui/audit", params={"actor": "nobody"})
    assert "No entries match" in filtered.text
    assert "Dates must be" in ui_client.get("/ui/audit", params={"since": "not a date"}).text


def test_ui_pages_limited_by_role(ui_client: Any, registry: Any, cast: Cast) -> None:
    version = submitted(registry, cast)
    sign_in(ui_client, cast.tokens["doc"])
    assert ui_client.get("/ui/audit").status_code == 403
    sign_in(ui_client, cast.tokens["auditor"])
    assert ui_client.get("/ui/cases").status_code == 403
    assert ui_client.get("/ui/api/cases/demo/gradcam").status_code == 403
    page = ui_client.get(f"/ui/models/{NAME}/{version}")
    assert page.status_code == 200
    assert "btn-approve" not in page.text and 'data-testid="no-actions"' in page.text
    sign_in(ui_client, cast.tokens["pacs"])
    assert ui_client.get("/ui/models").status_code == 403


def test_ui_buttons_follow_roles(ui_client: Any, registry: Any, cast: Cast) -> None:
    version = submitted(registry, cast)
    expected = {
        "doc": {"approve", "reject", "revoke"},
        "eng2": {"submit", "approve", "reject", "revoke", "promote"},
        "admin": {"revoke", "promote"},
        "auditor": set(),
    }
    for who, actions in expected.items():
        sign_in(ui_client, cast.tokens[who])
        text = ui_client.get(f"/ui/models/{NAME}/{version}").text
        shown = set(re.findall(r'class="btn-([a-z]+)"', text))
        assert shown == actions, who


def test_ui_approve_changes_mlflow_tags_and_audit(ui_client: Any, registry: Any, cast: Cast) -> None:
    version = submitted(registry, cast)
    csrf = sign_in(ui_client, cast.tokens["doc"])
    response = ui_client.post(
        f"/ui/models/{NAME}/{version}/approve",
        data={"csrf": csrf, "comment": "reviewed the gallery"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and "done=approve" in response.headers["location"]
    tags = registry.get_model_version(NAME, version).tags
    decisions = [json.loads(v) for k, v in tags.items() if k.startswith(TAG_DECISION_PREFIX)]
    assert [(d["actor"], d["decision"], d["comment"]) for d in decisions] == [
        ("doc", "approve", "reviewed the gallery")
    ]
    assert tags[TAG_STATUS] == "pending"
    entry = AuditLog().entries(action="model.approve")[-1]
    assert (entry.actor, entry.role) == ("doc", "clinical-reviewer")
    csrf = sign_in(ui_client, cast.tokens["eng2"])
    ui_client.post(f"/ui/models/{NAME}/{version}/approve", data={"csrf": csrf, "comment": "ok"})
    assert registry.get_model_version(NAME, version).tags[TAG_STATUS] == "approved"
    page = ui_client.post(f"/ui/models/{NAME}/{version}/promote", data={"csrf": csrf, "alias": "staging"})
    assert "Recorded: promote" in page.text
    assert str(registry.get_model_version_by_alias(NAME, "staging").version) == version


def test_ui_workflow_refusals_are_shown(ui_client: Any, registry: Any, cast: Cast) -> None:
    version = submitted(registry, cast)
    csrf = sign_in(ui_client, cast.tokens["eng"])
    page = ui_client.post(f"/ui/models/{NAME}/{version}/approve", data={"csrf": csrf, "comment": "mine"})
    assert "may not approve" in page.text  # the submitter (SelfApproval from the workflow)
    page = ui_client.post(f"/ui/models/{NAME}/{version}/promote", data={"csrf": csrf, "alias": "production"})
    assert "Policy not satisfied" in page.text
    csrf = sign_in(ui_client, cast.tokens["doc"])
    page = ui_client.post(f"/ui/models/{NAME}/{version}/reject", data={"csrf": csrf, "comment": " "})
    assert "A comment is required" in page.text


def test_ui_csrf_and_forged_requests_refused(ui_client: Any, registry: Any, cast: Cast) -> None:
    version = submitted(registry, cast)
    csrf_doc = sign_in(ui_client, cast.tokens["doc"])
    url = f"/ui/models/{NAME}/{version}/approve"
    assert ui_client.post(url, data={"comment": "no token"}).status_code == 403
    assert ui_client.post(url, data={"csrf": "0" * 64, "comment": "forged"}).status_code == 403
    csrf_auditor = sign_in(ui_client, cast.tokens["auditor"])
    assert csrf_auditor != csrf_doc
    # Another user's CSRF token does not work, and a role without the right is refused by the workflow.
    assert ui_client.post(url, data={"csrf": csrf_doc, "comment": "x"}).status_code == 403
    assert ui_client.post(url, data={"csrf": csrf_auditor, "comment": "x"}).status_code == 403
    tags = registry.get_model_version(NAME, version).tags
    assert not [k for k in tags if k.startswith(TAG_DECISION_PREFIX)]
    refused = AuditLog().entries(actor="auditor")
    assert refused, "the workflow audits refused steps"


def test_ui_revoked_user_is_signed_out(ui_client: Any, cast: Cast) -> None:
    from governance.auth import revoke_user

    sign_in(ui_client, cast.tokens["doc"])
    revoke_user("doc", by=cast["admin"])
    assert ui_client.get("/ui/models", follow_redirects=False).status_code == 303


def test_ui_logout_needs_csrf(ui_client: Any, cast: Cast) -> None:
    csrf = sign_in(ui_client, cast.tokens["doc"])
    assert ui_client.post("/ui/logout", data={}).status_code == 403
    response = ui_client.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert ui_client.get("/ui/models", follow_redirects=False).status_code == 303


def test_ui_feedback_on_unserved_case(ui_client: Any, cast: Cast) -> None:
    csrf = sign_in(ui_client, cast.tokens["doc"])
    response = ui_client.post("/ui/api/cases/demo/feedback", data={"csrf": csrf, "agree": "true"})
    assert response.status_code == 409
    assert ui_client.post("/ui/api/cases/demo/feedback", data={"agree": "true"}).status_code == 403


def test_ui_feedback_unknown_request(ui_client: Any, cast: Cast, radgate_home: Path) -> None:
    write_case(radgate_home, "served", request_id="req-unknown")
    csrf = sign_in(ui_client, cast.tokens["doc"])
    response = ui_client.post(
        "/ui/api/cases/served/feedback", data={"csrf": csrf, "agree": "false", "corrected_label": "normal"}
    )
    assert response.status_code == 404  # as POST /v1/feedback answers
    csrf = sign_in(ui_client, cast.tokens["eng"])
    response = ui_client.post("/ui/api/cases/served/feedback", data={"csrf": csrf, "agree": "true"})
    assert response.status_code == 403


@pytest.mark.parametrize("case_id", ["../x", "a" * 65])
def test_ui_bad_case_ids(ui_client: Any, cast: Cast, case_id: str) -> None:
    sign_in(ui_client, cast.tokens["doc"])
    assert ui_client.get(f"/ui/cases/{case_id}").status_code == 404


def test_ui_cli_registers_command() -> None:
    import typer
    from typer.testing import CliRunner

    from serving.ui.cli import register

    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:
        """Keeps typer in sub-command mode."""

    result = CliRunner().invoke(app, ["ui", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output


def test_ui_version_evidence_files(ui_client: Any, registry: Any, cast: Cast, tmp_path: Path) -> None:
    """Model card, evaluation plots, saliency gallery and the subgroup table from the run."""
    version = submitted(registry, cast)
    run_id = registry.get_model_version(NAME, version).run_id
    png = b"\x89PNG\r\n\x1a\nplot"
    (tmp_path / "calibration.png").write_bytes(png)
    (tmp_path / "case-01.png").write_bytes(png)
    (tmp_path / "model_card.md").write_text("# Model card\nIntended use: <triage>\n")
    report = {"subgroups": {"site": {"site-a": {"n": 40, "auroc": 0.9}, "site-b": {"n": 35, "auroc": 0.87}}}}
    (tmp_path / "evaluation.json").write_text(json.dumps(report))
    registry.log_artifact(run_id, str(tmp_path / "calibration.png"), "evaluation")
    registry.log_artifact(run_id, str(tmp_path / "evaluation.json"), "evaluation")
    registry.log_artifact(run_id, str(tmp_path / "case-01.png"), "explain/gallery")
    registry.log_artifact(run_id, str(tmp_path / "model_card.md"))
    sign_in(ui_client, cast.tokens["doc"])
    page = ui_client.get(f"/ui/models/{NAME}/{version}").text
    assert "Intended use: &lt;triage&gt;" in page  # escaped
    assert "site-b" in page and "Saliency gallery" in page
    base = f"/ui/models/{NAME}/{version}/files/"
    assert ui_client.get(base + "evaluation/calibration.png").content == png
    assert ui_client.get(base + "explain/gallery/case-01.png").content == png
    assert ui_client.get(base + "evaluation/evaluation.json").status_code == 404  # only listed plots
    assert ui_client.get(base + "../../mlflow.db").status_code == 404


def test_ui_feedback_on_served_case(ui_client: Any, cast: Cast, radgate_home: Path) -> None:
    """Feedback through the UI lands in the monitoring feedback store and the audit log."""
    from sqlalchemy import select

    from governance.catalog import open_catalog
    from serving.monitoring.feedback import FeedbackRecord

    record_served_request("req-ui-1")
    write_case(radgate_home, "served", request_id="req-ui-1")
    csrf = sign_in(ui_client, cast.tokens["doc"])
    assert "Disagree" in ui_client.get("/ui/cases/served").text
    response = ui_client.post(
        "/ui/api/cases/served/feedback",
        data={"csrf": csrf, "agree": "false", "corrected_label": "no_finding", "comment": "rib overlap"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["label"] == "no_finding"
    with open_catalog().session() as session:
        rows = list(session.scalars(select(FeedbackRecord)))
    assert [(r.reviewer, r.agree, r.label) for r in rows] == [("doc", False, "no_finding")]
    assert AuditLog().entries(action="monitoring.feedback", actor="doc")
    bad = ui_client.post("/ui/api/cases/served/feedback", data={"csrf": csrf, "agree": "false"})
    assert bad.status_code == 422  # a disagreement needs the corrected label


def test_ui_recent_predictions(ui_client: Any, cast: Cast) -> None:
    """Served requests from the monitoring store: newest first, paginated, filtered by model; one
    opens with what serving kept (summary, overlay) and takes feedback; roles limit all of it."""
    import base64
    from datetime import timedelta

    from governance.catalog import utcnow
    from serving.ui.predictions import PAGE_SIZE

    png = b"\x89PNG\r\n\x1a\n" + b"overlay"
    view = {"labels": ["no_finding", "opacity"], "decision": {"label": "opacity", "threshold": 0.5},
            "summary": "Finding: opacity (0.80); Grad-CAM attention in the right lower zone.",
            "explanation": {"method": "gradcam", "png_base64": base64.b64encode(png).decode()}}  # fmt: skip
    start = utcnow() - timedelta(hours=1)
    for i in range(PAGE_SIZE + 2):
        record_served_request(f"req-a-{i:03d}", model="chest-a", at=start + timedelta(seconds=i))
    record_served_request("req-b-newest", model="chest-b", view=view, at=start + timedelta(minutes=5))
    record_served_request("req-b-plain", model="chest-b", at=start)

    csrf = sign_in(ui_client, cast.tokens["doc"])
    page = ui_client.get("/ui/cases").text
    rows = re.findall(r'data-request-id="([^"]+)"', page)
    assert rows[:2] == ["req-b-newest", "req-a-021"] and len(rows) == PAGE_SIZE
    assert f"{PAGE_SIZE + 4} served requests" in page and "Page 1 of 2" in page
    older = re.findall(r'data-request-id="([^"]+)"', ui_client.get("/ui/cases?page=2").text)
    assert len(older) == 4 and not set(older) & set(rows)
    only_b = re.findall(r'data-request-id="([^"]+)"', ui_client.get("/ui/cases?model=chest-b").text)
    assert only_b == ["req-b-newest", "req-b-plain"]
    assert len(re.findall(r"data-request-id", ui_client.get("/ui/cases?model=nope").text)) == PAGE_SIZE

    detail = ui_client.get("/ui/predictions/req-b-newest").text
    assert "Grad-CAM attention in the right lower zone" in detail and "Disagree" in detail
    assert ui_client.get("/ui/api/predictions/req-b-newest/overlay.png").content == png
    plain = ui_client.get("/ui/predictions/req-b-plain").text
    assert "No explanation overlay kept" in plain and "No clinician summary" in plain
    assert ui_client.get("/ui/api/predictions/req-b-plain/overlay.png").status_code == 404
    assert ui_client.get("/ui/predictions/req-none").status_code == 404
    assert ui_client.get("/ui/predictions/..%2Fx").status_code == 404

    url = "/ui/api/predictions/req-b-newest/feedback"
    sent = ui_client.post(url, data={"csrf": csrf, "agree": "false", "corrected_label": "no_finding"})
    assert sent.status_code == 201 and sent.json()["label"] == "no_finding"
    assert ui_client.post(url, data={"agree": "true"}).status_code == 403  # no CSRF token
    assert (
        ui_client.post(
            "/ui/api/predictions/req-none/feedback", data={"csrf": csrf, "agree": "true"}
        ).status_code
        == 404
    )
    listed = ui_client.get("/ui/cases?model=chest-b").text
    assert re.search(r'data-request-id="req-b-newest">.*?data-testid="has-feedback">yes<', listed, re.S)
    assert AuditLog().entries(action="monitoring.feedback", actor="doc")

    csrf = sign_in(ui_client, cast.tokens["eng"])  # may look, may not give feedback
    assert "Disagree" not in ui_client.get("/ui/predictions/req-b-newest").text
    assert ui_client.post(url, data={"csrf": csrf, "agree": "true"}).status_code == 403
    sign_in(ui_client, cast.tokens["auditor"])
    assert ui_client.get("/ui/predictions/req-b-newest").status_code == 403
    assert ui_client.get("/ui/api/predictions/req-b-newest/overlay.png").status_code == 403


def test_ui_is_mounted_on_the_serving_api(cast: Cast) -> None:
    """`radgate serve` serves the UI on its own port: sign-in page, static files, a page by role."""
    from fastapi.testclient import TestClient

    from serving.api import api

    client = TestClient(api)
    assert "Your RadGate token" in client.get("/ui/login").text
    assert client.get("/ui/static/feedback.js").status_code == 200
    assert client.get("/ui/cases", follow_redirects=False).headers["location"] == "/ui/login"
    client.post("/ui/login", data={"token": cast.tokens["doc"]}, follow_redirects=False)
    assert "Recent predictions" in client.get("/ui/cases").text
    assert client.get("/healthz").status_code == 401  # the API's own routes are unchanged


def test_ui_case_links_to_its_study_in_the_viewer(
    ui_client: Any, cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A served case opens its study in the site's viewer (RADGATE_VIEWER_URL, e.g. OHIF); a UID
    that is not a DICOM UID never reaches the link; a template without {study} is refused."""
    from pydantic import ValidationError

    from governance.settings import Settings, get_settings

    base = {"decision": {"label": "opacity", "threshold": 0.5}, "summary": "s"}
    record_served_request("req-study", view={**base, "study_instance_uid": "1.2.840.99.7"})
    record_served_request("req-evil", view={**base, "study_instance_uid": '1.2"><script>x()</script>'})
    sign_in(ui_client, cast.tokens["doc"])
    unlinked = ui_client.get("/ui/predictions/req-study").text
    assert "1.2.840.99.7" in unlinked and 'data-testid="viewer-link"' not in unlinked

    monkeypatch.setenv("RADGATE_VIEWER_URL", "https://pacs.example/ohif/viewer?StudyInstanceUIDs={study}")
    get_settings.cache_clear()
    try:
        page = ui_client.get("/ui/predictions/req-study").text
        link = re.search(r'data-testid="viewer-link" href="([^"]+)"', page)
        assert link and link.group(1) == "https://pacs.example/ohif/viewer?StudyInstanceUIDs=1.2.840.99.7"
        evil = ui_client.get("/ui/predictions/req-evil").text
        assert 'data-testid="viewer-link"' not in evil and "<script>x()" not in evil
    finally:
        get_settings.cache_clear()
    with pytest.raises(ValidationError):
        Settings(viewer_url="https://pacs.example/ohif/viewer")
    with pytest.raises(ValidationError):
        Settings(viewer_url="javascript:alert(1)//{study}")
