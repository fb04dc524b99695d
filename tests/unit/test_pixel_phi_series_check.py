"""Series screening for streams: the first slice of a series is screened in full; every later
slice between samples is checked against the series' reference (the last slice screened clean)
in its quiet region (blocks where no render shows anything, away from anatomy); a change there
that a render would show, text at a sampled position, or any text found sends slices to full
screening. Real pixels: pydicom's 512 x 512 CT (693_J2KI.dcm), stored uncompressed, each slice
shifted a little as the deid bench's series corpus does."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cache

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from governance.keys import ProjectKey
from imaging.burned_in_corpus import font_paths
from imaging.decoding import decode_pixels
from imaging.deid import Deidentifier, DeidProfile, load_profile
from imaging.deid.burned_in import PixelScreener
from imaging.deid.burned_in.screen import _native_frame, _Quiet
from tests import dicom_factory  # as a module: pytest would collect a test* name imported here

KEY = ProjectKey(bytes(range(32)))
NAME, PATIENT_ID = "LINDQVIST^EVANDER", "73310442"


@cache
def _source() -> tuple[Dataset, np.ndarray]:
    ds = dcmread(dicom_factory.pydicom_file("693_J2KI.dcm"))
    pixels = np.asarray(decode_pixels(ds))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds, pixels


def _text_mask(text: str, size: int = 14) -> np.ndarray:
    canvas = Image.new("L", (12 * len(text) + 8, size + 8), 0)
    ImageDraw.Draw(canvas).text((2, 2), text, fill=255, font=ImageFont.truetype(str(font_paths()[1]), size))
    return np.asarray(canvas) > 96


def _slice(
    series_uid: str, number: int, *, text: Sequence[tuple[str, int, int]] = (), blob: bool = False
) -> Dataset:
    """Slice ``number`` of a series; ``text``: (text, x, y) drawn at the frame's top value;
    ``blob``: a bright disc (anatomy-like, no text) in the top-left corner."""
    source, pixels = _source()
    ds = copy.deepcopy(source)
    frame = np.roll(pixels, number % 7, axis=1).copy()
    for words, x, y in text:
        mask = _text_mask(words)
        frame[y : y + mask.shape[0], x : x + mask.shape[1]][mask] = frame.max()
    if blob:
        rows, columns = np.ogrid[: frame.shape[0], : frame.shape[1]]
        frame[(rows - 40) ** 2 + (columns - 40) ** 2 < 30**2] = 1100
    ds.PixelData = frame.tobytes()
    ds["PixelData"].VR = "OW"
    ds.SeriesInstanceUID, ds.Modality = series_uid, "CT"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = number + 1
    ds.ImagePositionPatient = [0.0, 0.0, 2.5 * number]
    ds.PatientName, ds.PatientID = NAME, PATIENT_ID
    return ds


def _profile(every: int = 32) -> DeidProfile:
    profile = load_profile("research")
    burned_in = profile.burned_in.model_copy(update={"series_screen_first": 1, "series_screen_every": every})
    return profile.model_copy(update={"burned_in": burned_in})


def _cleaned(ds: Dataset, x: int, y: int, text: str) -> bool:
    """Whether the glyphs of ``text`` drawn at (x, y) are all black in ``ds``'s stored pixels."""
    mask = _text_mask(text)
    stored = np.asarray(decode_pixels(ds))
    region = stored[y : y + mask.shape[0], x : x + mask.shape[1]]
    return bool((region[mask] == stored.min()).all())


def _run(deid: Deidentifier, slices: list[Dataset]) -> list[dict[str, object]]:
    screens = []
    for ds in slices:
        record = deid.deidentify(ds)
        assert record.pixel_screen is not None
        screens.append(record.pixel_screen)
    return screens


def test_a_clean_series_is_screened_once_and_checked_on_every_other_slice() -> None:
    deid = Deidentifier(_profile(every=8), KEY)
    series = generate_uid()
    screens = _run(deid, [_slice(series, n) for n in range(10)])
    assert [s["screened"] for s in screens] == [n in (0, 8) for n in range(10)]
    assert [s["series_checked"] for s in screens] == [n not in (0, 8) for n in range(10)]
    # a checked slice was not screened itself: never marked verified
    assert not any(s["verified"] for s, n in zip(screens, range(10), strict=True) if n not in (0, 8))


def test_static_text_appearing_on_an_unsampled_slice_is_found_there_and_cleaned_on_every_later_slice() -> (
    None
):
    deid = Deidentifier(_profile(), KEY)
    series = generate_uid()
    label = ("LINDQVIST", 6, 4)
    slices = [_slice(series, n, text=[label] if n >= 4 else []) for n in range(8)]
    screens = _run(deid, slices)
    assert [s["screened"] for s in screens[:5]] == [True, False, False, False, True]
    # later slices: screened in full (read as PHI) or given the series' boxes (redacted unread)
    for n in range(4, 8):
        assert screens[n]["boxes_redacted"], n
        assert _cleaned(slices[n], 6, 4, "LINDQVIST"), n


def test_text_on_one_unsampled_slice_only_is_found_and_cleaned() -> None:
    deid = Deidentifier(_profile(), KEY)
    series = generate_uid()
    slices = [_slice(series, n, text=[(PATIENT_ID, 390, 480)] if n == 5 else []) for n in range(8)]
    screens = _run(deid, slices)
    assert [s["screened"] for s in screens[:6]] == [n in (0, 5) for n in range(6)]
    assert screens[5]["boxes_redacted"] and _cleaned(slices[5], 390, 480, PATIENT_ID)


def test_per_slice_text_is_found_on_each_slice() -> None:
    deid = Deidentifier(_profile(), KEY)
    series = generate_uid()
    labels = {n: f"{PATIENT_ID} {n}" for n in range(3, 7)}  # an ID with the slice's number
    slices = [_slice(series, n, text=[(labels[n], 6, 480)] if n in labels else []) for n in range(7)]
    screens = _run(deid, slices)
    assert screens[3]["screened"]  # the first: screened in full
    for n, label in labels.items():  # later: in full, or within the series' boxes
        assert screens[n]["boxes_redacted"], n
        assert _cleaned(slices[n], 6, 480, label), n


def test_device_text_in_the_same_place_is_redacted_on_every_slice_by_the_series_boxes() -> None:
    deid = Deidentifier(_profile(), KEY)
    series = generate_uid()
    marker = ("AXIAL 5MM", 6, 480)  # not PHI: redacted as text outside anatomy
    slices = [_slice(series, n, text=[marker]) for n in range(6)]
    screens = _run(deid, slices)
    assert screens[0]["screened"] and screens[0]["boxes_redacted"] and not screens[0]["phi_lines"]
    for n in range(1, 6):
        assert not screens[n]["screened"] and screens[n]["series_boxes_applied"], n
        assert screens[n]["boxes_redacted"] == screens[0]["boxes_redacted"], n
        assert _cleaned(slices[n], 6, 480, "AXIAL 5MM"), n


def test_text_beyond_the_series_boxes_is_screened_in_full() -> None:
    deid = Deidentifier(_profile(), KEY)
    series = generate_uid()
    marker, name = ("AXIAL 5MM", 6, 480), ("EVANDER", 416, 4)  # a name in another corner
    slices = [_slice(series, n, text=[marker, name] if n == 3 else [marker]) for n in range(6)]
    screens = _run(deid, slices)
    assert [s["screened"] for s in screens[:4]] == [True, False, False, True]
    assert _cleaned(slices[3], 416, 4, "EVANDER")
    for n in range(4, 6):  # the marker alone again: in full, or within the series' boxes
        assert screens[n]["boxes_redacted"] and _cleaned(slices[n], 6, 480, "AXIAL 5MM"), n


def test_text_over_anatomy_at_a_sampled_slice_is_found() -> None:
    deid = Deidentifier(_profile(every=4), KEY)
    series = generate_uid()
    over = ("LINDQVIST", 200, 250)  # over the head: outside the quiet region
    slices = [_slice(series, n, text=[over] if n == 4 else []) for n in range(6)]
    screens = _run(deid, slices)
    assert screens[4]["screened"] and screens[4]["boxes_redacted"]
    assert _cleaned(slices[4], 200, 250, "LINDQVIST")


def test_anatomy_entering_the_quiet_region_is_screened_in_full_and_becomes_the_reference() -> None:
    deid = Deidentifier(_profile(), KEY)
    series = generate_uid()
    slices = [_slice(series, n, blob=n >= 3) for n in range(6)]
    screens = _run(deid, slices)
    assert [s["screened"] for s in screens] == [n in (0, 3) for n in range(6)]
    assert [s["series_checked"] for s in screens] == [n not in (0, 3) for n in range(6)]


def test_the_check_sees_the_least_change_a_render_shows() -> None:
    source, pixels = _source()
    reference = _Quiet.of(pixels, source)
    assert not reference.empty
    rows, columns = np.nonzero(reference.blocks)
    y, x = int(rows[0]) * 8, int(columns[0]) * 8
    assert reference.holds(pixels.copy())
    # the full-range renders: 10 of 255 levels of the frame's range
    step = (float(pixels.max()) - float(pixels.min())) * 10 / 255
    for change, holds in ((step * 0.9, True), (step * 1.1, False)):
        changed = pixels.copy()
        changed[y + 3, x + 3] = pixels[y : y + 8, x : x + 8].max() + int(change)
        assert reference.holds(changed) is holds
    # a change of another geometry is never held
    assert not reference.holds(pixels[:-8])


def test_a_slice_inside_the_window_is_held_to_the_windowed_render() -> None:
    source, _ = _source()
    ds = copy.deepcopy(source)
    flat = np.full((128, 128), 1064, np.int16)  # 40 HU: inside the 40/100 window, flat
    flat[:8, :8] = 0  # air in a corner: the frame's range (a tenth of it is 42 stored values)
    reference = _Quiet.of(flat, ds)
    assert reference.blocks[4:, 4:].all()
    # 24 of 255 levels of the 100-wide window: about 9.4 stored values
    for change, holds in ((8, True), (11, False)):
        changed = flat.copy()
        changed[60, 60] += change
        assert reference.holds(changed) is holds


def test_a_stroke_inside_a_block_is_seen_within_the_blocks_old_extremes() -> None:
    source, _ = _source()
    ds = copy.deepcopy(source)
    del ds.WindowCenter, ds.WindowWidth  # the full-range renders only: 10 levels of 1000 = 39
    frame = np.zeros((128, 128), np.int16)
    frame[:, 64:] = 1000
    frame[:, :32:2] = 30  # a ground spanning 30 (quiet: under 39)
    reference = _Quiet.of(frame, ds)
    assert reference.blocks[:, :2].all()
    for level, holds in ((0, True), (-15, False)):  # -15 on 30: 45 apart, within 0 - 39
        changed = frame.copy()
        changed[20, 2:6] = np.where(changed[20, 2:6] == 30, level, changed[20, 2:6])
        assert reference.holds(changed) is holds


def test_colour_or_tiny_slices_have_no_quiet_region() -> None:
    source, _ = _source()
    assert _Quiet.of(np.zeros((16, 16), np.int16), source).empty
    assert _Quiet.of(np.zeros((64, 64, 3), np.uint8), source).empty


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm", "MR2_UNCI.dcm", "693_UNCI.dcm"]
)
def test_native_slices_are_read_as_the_bounded_decoder_reads_them(name: str) -> None:
    ds = dcmread(dicom_factory.pydicom_file(name))
    native = _native_frame(ds)
    assert native is not None
    assert np.array_equal(native.astype(np.int64), np.asarray(decode_pixels(ds)).astype(np.int64))


def test_compressed_or_multi_sample_data_is_left_to_the_decoder() -> None:
    assert _native_frame(dcmread(dicom_factory.pydicom_file("693_J2KI.dcm"))) is None
    assert _native_frame(dcmread(dicom_factory.pydicom_file("SC_rgb.dcm"))) is None


def test_screeners_of_one_process_share_their_engine() -> None:
    policy = load_profile("research").burned_in
    assert PixelScreener(policy).engine() is PixelScreener(policy).engine()


def test_a_series_without_a_quiet_region_still_gets_its_boxes() -> None:
    ds = dcmread(dicom_factory.pydicom_file("CT_small.dcm"))  # anatomy everywhere: no quiet region
    pixels = np.asarray(decode_pixels(ds))
    reference = _Quiet.of(pixels, ds, ((4, 4, 30, 10),))
    assert reference.empty
    screener = PixelScreener(load_profile("research").burned_in)
    result = screener._checked(ds, reference, {})
    assert result is not None and result.series_boxes_applied and not result.series_checked
    assert result.pixels is not None
    assert (result.pixels[4:14, 4:34] == pixels.min()).all()
    assert np.array_equal(result.pixels[20:], pixels[20:])
