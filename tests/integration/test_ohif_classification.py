"""A classification study in OHIF (the viewer Orthanc serves, Debian's Chromium headless): the source
chest X-ray with RadGate's AI results in its study (TID 1500 SR, Secondary Capture overlay, saliency
SEG). The study browser shows the SR with its finding and verdict and the attention SEG; the
overlay opens beside the source image (1x2 layout) and is coloured exactly where the model looked,
while the source stays greyscale. Screenshots are kept in ``$RADGATE_UI_ARTIFACTS`` (default: the
test's temporary folder).

What OHIF 3.13 does not do with a projection image, found while writing this test: it cannot load a
SEG on an image without Image Orientation (Patient) (cornerstone3D's createLabelmapsFromSegImageIds
throws), and its SR viewport draws only measurements that carry a cornerstone tool tracking
identifier, so the SR's attention region is not drawn; the SC is what a PACS user sees overlaid.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imaging.gateway.viewer import ohif_dist
from tests.integration.conftest import orthanc_ci
from tests.integration.test_pacs_viewer import CHROMIUM, coloured, ohif_page

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed"),
    pytest.mark.skipif(shutil.which("Orthanc") is None, reason="Orthanc is not installed"),
    pytest.mark.skipif(
        not (ohif_dist() / "index.html").exists(), reason="OHIF not installed (scripts/ci/install-viewer.sh)"
    ),
]


@pytest.fixture(scope="module")
def viewer_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = orthanc_ci.OrthancServer(tmp_path_factory.mktemp("orthanc.air"), viewer=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _encode(dataset: Any) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _image(png: bytes) -> np.ndarray:
    """The viewport's image area: overlays (date, cine controls, window/level) cut off."""
    from PIL import Image

    rgb = np.asarray(Image.open(BytesIO(png)).convert("RGB"), dtype=np.int32)
    height, width = rgb.shape[:2]
    return rgb[int(0.2 * height) : int(0.85 * height), int(0.02 * width) : int(0.98 * width)]


def test_classification_results_shown_in_ohif(viewer_pacs: Any, tmp_path: Path, playwright: Any) -> None:
    from playwright.sync_api import expect
    from pydicom import dcmread

    from imaging.demo_data import write_demo_studies
    from imaging.results import (
        AlgorithmIdentity,
        ModelApproval,
        attention_region,
        blend_overlay,
        build_overlay_secondary_capture,
        build_result_report,
        build_saliency_segmentation,
        display_image,
    )

    shots = Path(os.environ.get("RADGATE_UI_ARTIFACTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    source = dcmread(
        write_demo_studies(tmp_path / "demo", patients=1, images_per_patient=1, size=256).files[0]
    )
    algorithm = AlgorithmIdentity("chest-opacity", "3", "Grad-CAM")
    approval = ModelApproval("3", "ab" * 32, "approved", "production")
    heat = np.zeros((int(source.Rows), int(source.Columns)))
    heat[60:140, 150:230] = 1.0  # the patient's left lung field (image right)
    shown = display_image(source)
    objects = [
        source,
        build_overlay_secondary_capture(source, blend_overlay(shown.pixels, heat), algorithm),
        build_result_report(
            source,
            algorithm,
            finding="opacity",
            probability=0.91,
            approval=approval,
            positive=True,
            region=attention_region(heat),
        ),
        build_saliency_segmentation(source, heat, algorithm, finding="opacity", approval=approval),
    ]
    for dataset in objects:
        viewer_pacs.upload(_encode(dataset))

    with ohif_page(playwright, viewer_pacs, viewer_pacs.viewer_url(source.StudyInstanceUID)) as (
        page,
        failed,
    ):
        # The study browser: the SR states the finding and verdict, the SEG the attention map.
        expect(page.get_by_text("AI: opacity present (p=0.91), chest-opacity v3").first).to_be_visible(
            timeout=60_000
        )
        expect(page.get_by_text("AI attention: chest-opacity v3").first).to_be_visible()
        expect(page.get_by_text("DX", exact=True).first).to_be_visible()
        # Two viewports: the source left, the overlay right (OHIF's layout tool, 1x2).
        page.locator('[data-cy="Layout"]').click()
        page.locator('[data-cy="Layout-1-0"]').click()  # column 1 of row 0: 1x2
        viewports = page.locator('[data-cy="viewport-pane"]')
        expect(viewports).to_have_count(2, timeout=30_000)
        viewports.nth(1).click()
        page.get_by_text("AI Grad-CAM: chest-opacity v3").first.dblclick()
        page.mouse.move(0, 0)
        left = right = np.zeros((1, 1, 3), dtype=np.int32)
        for _ in range(60):  # rendering is asynchronous: poll until the overlay is drawn
            left, right = _image(viewports.nth(0).screenshot()), _image(viewports.nth(1).screenshot())
            if coloured(right).sum() > 500:
                break
            page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "ohif-classification-page.png"))
        (shots / "ohif-classification-overlay.png").write_bytes(viewports.nth(1).screenshot())
        assert coloured(left).sum() < 50  # the source: greyscale
        hue = coloured(right)
        assert hue.sum() > 500
        # The colour sits where the map is: right half of the image, upper half of the lungs.
        rows, columns = np.nonzero(hue)
        height, width = hue.shape
        assert columns.mean() > 0.5 * width and rows.mean() < 0.6 * height
        assert not failed, failed
