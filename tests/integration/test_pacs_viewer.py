"""A PACS user sees RadGate's DICOM SEG over the series: a real Orthanc serving the OHIF Viewer
(``imaging.gateway.viewer``) holds an MR series and the SEG RadGate writes for it; Debian's
Chromium (headless, WebGL2 through SwiftShader) opens the study in OHIF and loads the SEG as a
user does. The segment labels must appear in the segmentation panel and the overlay must cover
the bright blob of the image (the labelled structure) on the same slice, left segment left of
the right one. Both SEG encodings RadGate writes are shown: BINARY (64 x 64 slices) and
FRACTIONAL (42 x 42: bit-packed frames would not be byte-aligned). Screenshots go to
``$RADGATE_UI_ARTIFACTS`` (default: the test's temporary folder)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imaging.gateway.viewer import ohif_dist
from tests.integration.conftest import orthanc_ci
from tests.seg_series import blob_labels, encode, make_series

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed"),
    pytest.mark.skipif(shutil.which("Orthanc") is None, reason="Orthanc is not installed"),
    pytest.mark.skipif(
        not (ohif_dist() / "index.html").exists(), reason="OHIF not installed (scripts/ci/install-viewer.sh)"
    ),
]

STRUCTURES = {1: "left blob", 2: "right blob"}
SLICES = 14
# cornerstone3D renders through WebGL2: SwiftShader gives it one without a GPU.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def ohif_page(playwright: Any, viewer_pacs: Any, url: str) -> Iterator[tuple[Any, list[str]]]:
    """OHIF opened at ``url`` in Debian's Chromium, signed in to the viewer's Orthanc, past the
    first-visit tour; yields the page and the HTTP errors it meets. ``playwright`` is
    pytest-playwright's session instance: a second sync_playwright() in the same thread fails
    once the UI tests have started theirs."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        context = browser.new_context(
            http_credentials={"username": viewer_pacs.user, "password": viewer_pacs.password},
            viewport={"width": 1280, "height": 800},
        )
        page = context.new_page()
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(url)
        page.get_by_text("Skip all").click(timeout=90_000)  # OHIF's first-visit tour
        yield page, failed
    finally:
        browser.close()


@pytest.fixture(scope="module")
def viewer_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # A dot in the folder (as in ./.radgate) changes what ServeFolders takes as file extensions.
    server = orthanc_ci.OrthancServer(tmp_path_factory.mktemp("orthanc.viewer"), viewer=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RADGATE_UI_ARTIFACTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _rgb(png: bytes) -> np.ndarray:
    """The viewport's image area: its border, corner annotations and slice scrollbar cut off."""
    from PIL import Image

    rgb = np.asarray(Image.open(BytesIO(png)).convert("RGB"), dtype=np.int32)
    height, width = rgb.shape[:2]
    return rgb[int(0.08 * height) : int(0.92 * height), int(0.08 * width) : int(0.92 * width)]


def bright(rgb: np.ndarray) -> np.ndarray:
    """Grey pixels well above the noise: the blob (the labelled structure) of the middle slices."""
    return np.asarray(((rgb.max(axis=2) - rgb.min(axis=2)) < 12) & (rgb.mean(axis=2) > 170))


def coloured(rgb: np.ndarray) -> np.ndarray:
    """Pixels with a hue: only segment fills and outlines are coloured on a greyscale MR."""
    return np.asarray((rgb.max(axis=2) - rgb.min(axis=2)) > 40)


def slice_index(page: Any) -> int:
    text = page.locator('[data-cy="viewport-overlay-bottom-right"]').inner_text()
    found = re.search(r"\((\d+)/\d+\)", text)
    assert found, text
    return int(found.group(1))


def go_to_slice(page: Any, target: int) -> None:
    """Step through the stack with the arrow keys (OHIF's next/previous image)."""
    from playwright.sync_api import expect

    current = slice_index(page)
    key = "ArrowDown" if target > current else "ArrowUp"
    for _ in range(abs(target - current)):
        page.keyboard.press(key)
    expect(page.locator('[data-cy="viewport-overlay-bottom-right"]')).to_contain_text(f"({target}/{SLICES})")


@pytest.mark.parametrize(("size", "encoding"), [(64, "BINARY"), (42, "FRACTIONAL")])
def test_ohif_in_orthanc_overlays_radgate_seg(
    viewer_pacs: Any, shots: Path, size: int, encoding: str, playwright: Any
) -> None:
    from playwright.sync_api import expect

    from imaging.results import AlgorithmIdentity, build_segmentation

    sources = make_series(slices=SLICES, size=size, seed=3)
    ordered, labels = blob_labels(sources)
    seg = build_segmentation(ordered, labels, STRUCTURES, AlgorithmIdentity("radgate-blob", "1", "blob test"))
    assert seg.SegmentationType == encoding
    for dataset in [*sources, seg]:
        viewer_pacs.upload(encode(dataset))
    url = viewer_pacs.viewer_url(sources[0].StudyInstanceUID)

    with ohif_page(playwright, viewer_pacs, url) as (page, failed):
        counter = page.locator('[data-cy="viewport-overlay-bottom-right"]')
        expect(counter).to_contain_text(f"/{SLICES})", timeout=60_000)
        # The segmentation panel open from the start: the viewport keeps its size throughout.
        page.locator('[data-cy="panelSegmentation-btn"]').click()
        viewport = page.locator('[data-cy="viewport-pane"]').first
        viewport.click()  # keyboard focus (the window/level tool ignores a click)
        middle = SLICES // 2  # through the blob
        go_to_slice(page, middle)
        page.mouse.move(0, 0)
        before = _rgb(viewport.screenshot(path=str(shots / f"ohif-series-{size}.png")))
        blob = bright(before)
        assert blob.sum() > 2000 and coloured(before).sum() < 20  # the image, uncoloured

        # Load the SEG as a PACS user does: open its series, accept the hydration prompt.
        page.get_by_text("SEG", exact=True).dblclick()
        page.get_by_role("button", name="Yes").click(timeout=60_000)
        for label in STRUCTURES.values():
            expect(page.get_by_text(label, exact=True).first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("AI segmentation: radgate-blob").first).to_be_visible()
        viewport.click()
        go_to_slice(page, middle)
        page.mouse.move(0, 0)
        overlay, after = np.zeros_like(blob), before
        for _ in range(60):  # rendering is asynchronous: poll the canvas until it is drawn
            after = _rgb(viewport.screenshot())
            overlay = coloured(after)
            if overlay.sum() > 0.8 * blob.sum():
                break
            page.wait_for_timeout(500)
        page.screenshot(path=str(shots / f"ohif-seg-{size}-page.png"))
        (shots / f"ohif-seg-{size}.png").write_bytes(viewport.screenshot())

        # The overlay is the blob: same place, same extent (fills and a thin outline).
        iou = (overlay & blob).sum() / (overlay | blob).sum()
        assert iou > 0.75, iou
        # "left blob" (lower columns, hue red) is drawn left of "right blob" (hue green).
        red = overlay & (after[..., 0] > after[..., 1])
        green = overlay & (after[..., 1] > after[..., 0])
        assert red.sum() > 0.3 * blob.sum() and green.sum() > 0.3 * blob.sum()
        assert np.nonzero(red)[1].mean() < np.nonzero(green)[1].mean()
        assert not failed, failed
