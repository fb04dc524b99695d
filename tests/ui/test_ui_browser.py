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
from tests.ui.conftest import record_served_request

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
