"""The reviewer UI in a real headless Chromium (Debian's, driven by Playwright): two reviewers
approve a version and see the checklist change; a third user inspects the overlay of the demo
case (real Captum maps on a synthetic radiograph) and sends feedback to the monitoring store.
Screenshots go to ``$RADGATE_UI_ARTIFACTS``
(default: the test's temporary folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from governance.approvals import TAG_STATUS, Workflow
from governance.testing import Cast, create_version
from tests.ui.conftest import record_served_request, serve_prediction

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian chromium not installed"),
]

NAME = "cxr-pneumonia"


@pytest.fixture()
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RADGATE_UI_ARTIFACTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/ui/login")
    page.get_by_label("Your RadGate token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/*")


def sign_out(page: Any) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")


def requirement(page: Any, name: str) -> str | None:
    return page.locator(f'#checklist tr[data-requirement="{name}"]').get_attribute("data-passed")


def test_ui_browser_two_reviewers_approve(
    page: Any, live_ui: str, registry: Any, cast: Cast, shots: Path
) -> None:
    from playwright.sync_api import expect

    version, _ = create_version(registry, NAME)
    Workflow(registry).submit(cast["eng"], NAME, version, "ready for review")
    page.set_viewport_size({"width": 1280, "height": 800})

    sign_in(page, live_ui, cast.tokens["doc"])
    page.get_by_role("link", name=f"v{version}").click()
    expect(page.get_by_test_id("status")).to_have_text("pending")
    assert requirement(page, "approved by clinical-reviewer") == "false"
    assert page.locator("button.btn-promote").count() == 0
    page.get_by_label("Comment for approve").fill("gallery and subgroups reviewed")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status").first).to_contain_text("Recorded: approve")
    assert requirement(page, "approved by clinical-reviewer") == "true"
    expect(page.locator("#history")).to_contain_text("gallery and subgroups reviewed")
    page.screenshot(path=str(shots / "version-after-first-approval.png"), full_page=True)
    sign_out(page)

    sign_in(page, live_ui, cast.tokens["eng2"])
    page.goto(f"{live_ui}/ui/models/{NAME}/{version}")
    page.get_by_label("Comment for approve").fill("metrics and sanity check fine")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_test_id("status")).to_have_text("approved")
    assert requirement(page, "approved by ml-engineer") == "true"
    assert registry.get_model_version(NAME, version).tags[TAG_STATUS] == "approved"
    page.get_by_label("Alias").select_option("staging")
    page.get_by_role("button", name="Promote").click()
    expect(page.locator("main")).to_contain_text("serving as staging")
    page.set_viewport_size({"width": 768, "height": 1024})  # tablet width
    page.screenshot(path=str(shots / "version-promoted-tablet.png"), full_page=True)
    sign_out(page)

    sign_in(page, live_ui, cast.tokens["auditor"])
    page.goto(f"{live_ui}/ui/models/{NAME}/{version}")
    expect(page.get_by_test_id("no-actions")).to_be_visible()
    page.goto(f"{live_ui}/ui/audit")
    expect(page.get_by_test_id("chain")).to_contain_text("Chain verified")


def overlay_pixel_sum(page: Any) -> int:
    return int(
        page.evaluate(
            """() => { const c = document.getElementById('canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let s = 0; for (let i = 0; i < d.length; i += 4) s += Math.abs(d[i] - d[i + 2]); return s; }"""
        )
    )


def test_ui_browser_case_overlay(
    page: Any, live_ui: str, cast: Cast, shots: Path, radgate_home: Path
) -> None:
    from playwright.sync_api import expect

    record_served_request("req-browser-1")  # the demo case stands for a served prediction here
    meta_path = radgate_home / "ui" / "cases" / "demo" / "case.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "request_id": "req-browser-1"}))
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page, live_ui, cast.tokens["doc2"])  # a third reviewer
    page.goto(f"{live_ui}/ui/cases")
    page.get_by_role("link", name="Demo radiograph (synthetic)").click()
    viewer = page.locator("#viewer")
    expect(viewer).to_have_attribute("data-ready", "yes")
    coloured = overlay_pixel_sum(page)
    assert coloured > 0  # the attribution map is drawn in colour over the grey image
    page.screenshot(path=str(shots / "case-overlay.png"))

    page.get_by_label("Overlay on").uncheck()
    expect(viewer).to_have_attribute("data-overlay", "off")
    assert overlay_pixel_sum(page) == 0  # grey image only
    page.get_by_label("Overlay on").check()
    page.get_by_label("Overlay opacity").fill("100")
    expect(viewer).to_have_attribute("data-opacity", "100")
    assert overlay_pixel_sum(page) > coloured
    page.get_by_label("Explanation").select_option("saliency")
    expect(viewer).to_have_attribute("data-ready", "yes")
    page.locator("#canvas").focus()
    page.keyboard.press("+")
    expect(page.locator("#zoom-out")).to_have_text("1.3")
    page.screenshot(path=str(shots / "case-saliency-zoomed.png"))

    page.get_by_label("Corrected label (if you disagree)").fill("no_finding")
    page.get_by_label("Comment", exact=True).fill("opacity is a rib overlap")
    page.get_by_role("button", name="Disagree").click()
    expect(page.locator("#fb-result")).to_have_text("Feedback recorded.")


def test_ui_browser_recent_prediction_feedback(
    page: Any, live_ui: str, cast: Cast, shots: Path, tmp_path: Path
) -> None:
    """A prediction served for real (Grad-CAM asked for) is listed on the Cases page; a reviewer
    opens it, sees the summary and the kept overlay, and sends feedback with the keyboard; an ML
    engineer sees the prediction but no feedback buttons."""
    from playwright.sync_api import expect
    from sqlalchemy import select

    from governance.catalog import open_catalog
    from serving.monitoring.models import FeedbackRecord

    result = serve_prediction(cast, tmp_path / "studies")
    short = result["request_id"][:12]
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page, live_ui, cast.tokens["doc2"])
    page.goto(f"{live_ui}/ui/cases")
    row = page.locator(f'#predictions tr[data-request-id="{result["request_id"]}"]')
    expect(row).to_contain_text("cxr-served")
    expect(row.get_by_test_id("has-feedback")).to_have_text("no")
    page.screenshot(path=str(shots / "cases-recent-predictions.png"), full_page=True)
    page.get_by_role("link", name=f"Prediction {short}").click()
    expect(page.get_by_test_id("summary")).to_have_text(result["summary"])
    from serving.ui.predictions import load_prediction

    # serving kept the request's study (the UI's viewer link reads it); a UID, nothing else
    kept = load_prediction(result["request_id"]).study_instance_uid
    assert kept and all(part.isdigit() for part in kept.split("."))
    overlay = page.get_by_role("img", name=f"gradcam explanation overlaid on the image of request {short}")
    expect(overlay).to_be_visible()
    assert page.evaluate("() => document.getElementById('overlay').naturalWidth") > 0
    page.get_by_label("Corrected label (if you disagree)").select_option("no_finding")
    page.get_by_label("Comment", exact=True).fill("rib overlap")
    page.get_by_role("button", name="Disagree").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#fb-result")).to_have_text("Feedback recorded.")
    page.screenshot(path=str(shots / "prediction-feedback.png"), full_page=True)
    with open_catalog().session() as session:
        rows = list(session.scalars(select(FeedbackRecord)))
    assert [(r.request_id, r.reviewer, r.agree, r.label) for r in rows] == [
        (result["request_id"], "doc2", False, "no_finding")
    ]
    page.goto(f"{live_ui}/ui/cases")
    expect(row.get_by_test_id("has-feedback")).to_have_text("yes")
    sign_out(page)

    sign_in(page, live_ui, cast.tokens["eng"])
    page.goto(f"{live_ui}/ui/predictions/{result['request_id']}")
    expect(page.get_by_test_id("request-id")).to_have_text(result["request_id"])
    assert page.get_by_role("button", name="Disagree").count() == 0
    assert page.get_by_role("button", name="Agree").count() == 0
    page.set_viewport_size({"width": 768, "height": 1024})  # tablet width
    page.screenshot(path=str(shots / "prediction-engineer-tablet.png"), full_page=True)
