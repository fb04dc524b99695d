"""End to end: an ultrasound cine with burned-in PHI text arrives by C-STORE (dcmtk's storescu)
at the gateway, is screened, redacted in every frame and verified, and the stored object is
OCR'd again here: no identifier of the input can be read in any frame.

Before, the research profile quarantined every ultrasound instance unread (burned_in_risk)."""

from __future__ import annotations

import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.uid import UID, generate_uid
from sqlalchemy import select

from governance.catalog import Instance, LineageEvent, open_catalog
from governance.settings import get_settings
from imaging.burned_in_corpus import font_paths
from imaging.decoding import decode_pixels
from imaging.deid.burned_in import TesseractEngine, find_tessdata, renders
from tests import dicom_factory  # as a module: pytest would collect a test* name imported here
from tests.integration.conftest import gateway_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_tessdata() is None, reason="tesseract-ocr-eng is not installed"),
]

NAME, PATIENT_ID, ACCESSION = "OKONKWO^INGRID", "40918273", "A7734102"


def _cine(tmp_path: Path) -> Path:
    """pydicom's real ultrasound cine (30 frames, JPEG baseline YBR_FULL_422) with the patient's
    name, ID and accession burned into the dark band above the sector of every frame, then
    re-encoded as JPEG baseline by dcmtk (as the device would send it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(dicom_factory.pydicom_file("examples_ybr_color.dcm"))
    frames = np.array(decode_pixels(ds), copy=True)  # (30, 240, 320, 3) RGB
    font = ImageFont.truetype(str(font_paths()[1]), 15)
    for text, (x, y) in (
        (OKONKWO_LINE, (4, 2)),
        (f"ID {PATIENT_ID}", (200, 2)),
        (f"ACC {ACCESSION}", (4, 216)),
    ):
        canvas = Image.new("L", (200, 22), 0)
        ImageDraw.Draw(canvas).text((1, 1), text, fill=255, font=font)
        mask = np.asarray(canvas) > 96
        height, width = mask.shape
        width = min(width, frames.shape[2] - x)
        region = frames[:, y : y + height, x : x + width]
        region[:, mask[:, :width]] = (255, 255, 255)
    ds.PixelData = frames.tobytes()
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    ds.PatientName, ds.PatientID, ds.AccessionNumber = NAME, PATIENT_ID, ACCESSION
    ds.BurnedInAnnotation = "NO"  # wrong, as many devices write it: the flag is never trusted
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    plain = tmp_path / "cine-plain.dcm"
    ds.save_as(plain, enforce_file_format=True)
    compressed = tmp_path / "cine.dcm"
    subprocess.run(["dcmcjpeg", "+eb", str(plain), str(compressed)], check=True, capture_output=True)
    return compressed


OKONKWO_LINE = "OKONKWO, INGRID"


def _read_text(ds: Any, frames: np.ndarray) -> str:
    engine = TesseractEngine()
    out: list[str] = []
    for frame in frames:
        for render in renders(frame, ds):
            out.extend(line.text for line in engine.read(render, timeout_ms=20000))
    return " ".join(out).upper().replace(" ", "")


def test_ultrasound_cine_with_burned_in_text_is_cleaned_through_the_gateway(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    cine = _cine(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = dcmread(cine)
    # the check below can fail: the identifiers are legible in the input
    before = _read_text(source, decode_pixels(source)[:2])
    assert "OKONKWO" in before and PATIENT_ID in before

    gateway = start_gateway(gateway_config())
    sent = subprocess.run(
        [
            "storescu",
            "-v",
            "-xy",
            "-R",
            "-aet",
            "STORESCU",
            "-aec",
            "RADGATE",
            "127.0.0.1",
            str(gateway.dicom_port),
            str(cine),
        ],
        env=dicom_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sent.returncode == 0, sent.stderr[-3000:]

    deadline = time.monotonic() + 60
    instances: list[Instance] = []
    while time.monotonic() < deadline and not instances:
        with open_catalog().session() as session:
            instances = list(session.scalars(select(Instance)))
        time.sleep(0.2)
    assert len(instances) == 1, "the cine was quarantined or lost"
    stored = next(Path(get_settings().resolved_object_store).rglob(f"{instances[0].sha256}*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = dcmread(stored)
    assert out.Modality == "US" and int(out.NumberOfFrames) == 30
    assert out.BurnedInAnnotation == "NO"
    assert out.LossyImageCompression == "01"  # the input was JPEG baseline: once lossy, always
    assert not out.file_meta.TransferSyntaxUID.is_compressed
    frames = decode_pixels(out)
    after = _read_text(out, frames[::3])  # every third frame, sampled or not at screening
    for identifier in ("OKONKWO", "INGRID", PATIENT_ID, ACCESSION):
        assert identifier not in after
    # the name's band is black in every frame
    assert int(frames[:, 4:18, 8:100].max()) < 40

    with open_catalog().session() as session:
        events = list(
            session.scalars(select(LineageEvent).where(LineageEvent.output_sha256 == instances[0].sha256))
        )
    screen = next(e.details["pixel_screen"] for e in events if "pixel_screen" in (e.details or {}))
    assert screen["engine"]["engine"] == "rapidocr" and screen["verified"]
    assert len(screen["boxes_redacted"]) >= 3
    assert "OKONKWO" not in str(screen).upper()  # boxes and versions only, never text
