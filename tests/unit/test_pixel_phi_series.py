"""Series sampling: a CT series without text is screened on its first slices and then every
Nth; once PHI text is found in a series every later slice is screened; a radiograph is always
screened. Real pixels: pydicom's CT_small.dcm."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from governance.keys import ProjectKey
from imaging.burned_in_corpus import font_paths
from imaging.deid import Deidentifier, load_profile
from tests import dicom_factory  # as a module: pytest would collect a test* name imported here

KEY = ProjectKey(bytes(range(32)))


def _slice(series_uid: str, number: int, *, text: str | None = None, modality: str = "CT") -> Dataset:
    ds = dcmread(dicom_factory.pydicom_file("CT_small.dcm"))
    ds.SeriesInstanceUID, ds.Modality = series_uid, modality
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = number
    ds.PatientName, ds.PatientID = "LINDQVIST^EVANDER", "73310442"
    if text is not None:
        pixels = ds.pixel_array.copy()
        canvas = Image.new("L", (128, 24), 0)
        ImageDraw.Draw(canvas).text((1, 1), text, fill=255, font=ImageFont.truetype(str(font_paths()[1]), 16))
        mask = np.asarray(canvas) > 96
        pixels[2:26][mask] = pixels.max()
        ds.PixelData = pixels.tobytes()
    return ds


def test_series_without_text_is_sampled() -> None:
    deid = Deidentifier(load_profile("research"), KEY)
    policy = deid.profile.burned_in
    series = generate_uid()
    screened = []
    for number in range(40):
        record = deid.deidentify(_slice(series, number + 1))
        assert record.pixel_screen is not None
        screened.append(record.pixel_screen["screened"])
    first, every = policy.series_screen_first, policy.series_screen_every
    expected = [n < first or (n - first + 1) % every == 0 for n in range(40)]
    assert screened == expected
    # slices left unscreened are not marked as verified
    assert sum(screened) < 40


def test_series_with_text_is_screened_on_every_slice_from_then_on() -> None:
    deid = Deidentifier(load_profile("research"), KEY)
    series = generate_uid()
    records = [deid.deidentify(_slice(series, n + 1, text="LINDQVIST")) for n in range(8)]
    assert all(r.pixel_screen is not None and r.pixel_screen["screened"] for r in records)
    assert all(r.pixel_screen is not None and r.pixel_screen["boxes_redacted"] for r in records)


def test_single_frame_radiographs_are_always_screened() -> None:
    deid = Deidentifier(load_profile("research"), KEY)
    series = generate_uid()
    records = [deid.deidentify(_slice(series, n + 1, modality="DX")) for n in range(5)]
    assert all(r.pixel_screen is not None and r.pixel_screen["screened"] for r in records)
