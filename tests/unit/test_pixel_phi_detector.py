"""The detector engine (RapidOCR, the default): vertical labels and text over anatomy are found
and redacted, detector boxes are shrunk to the glyphs across the line only, and verification
after a redaction re-detects around it instead of over the whole frame. Real engine, real
pixels (pydicom's MR_small.dcm and CT_small.dcm), text drawn with PIL."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from governance.keys import ProjectKey
from imaging.burned_in_corpus import font_paths
from imaging.deid import Deidentifier, load_profile
from imaging.deid.burned_in import RapidOcrEngine
from imaging.deid.burned_in.ocr import TextDetector
from imaging.deid.burned_in.screen import _tighten
from tests import dicom_factory

KEY = ProjectKey(bytes(range(32)))
SURNAME, PATIENT_ID = "WINTERBOTTOM", "60417723"


def _glyph_mask(text: str, size: int) -> np.ndarray:
    font = ImageFont.truetype(str(font_paths()[0]), size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    canvas = Image.new("L", (int(right - left) + 2, int(bottom - top) + 2), 0)
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font)
    return np.asarray(canvas) > 96


def _with_text(name: str, draw: list[tuple[str, int, int, bool]], size: int = 14) -> tuple[Dataset, list]:
    """A packaged image with lines drawn at the top of its stored range; (dataset, boxes)."""
    ds = dcmread(dicom_factory.pydicom_file(name))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = f"{SURNAME}^HILDEGARD", PATIENT_ID
    pixels = ds.pixel_array.copy()
    boxes = []
    for text, x, y, vertical in draw:
        mask = _glyph_mask(text, size)
        if vertical:  # printed bottom-to-top along an edge
            mask = np.rot90(mask)
        h, w = mask.shape
        pixels[y : y + h, x : x + w][mask] = pixels.max()
        boxes.append((x, y, w, h))
    ds.PixelData = pixels.tobytes()
    return ds, boxes


def _covered(screen: dict, box: tuple[int, int, int, int], shape: tuple[int, int]) -> float:
    covered = np.zeros(shape, bool)
    for x, y, w, h in screen["boxes_redacted"]:
        covered[y : y + h, x : x + w] = True
    x, y, w, h = box
    return float(covered[y : y + h, x : x + w].mean())


def test_the_default_engine_is_the_detector() -> None:
    deid = Deidentifier(load_profile("research"), KEY)
    assert deid.profile.burned_in.engine == "rapidocr"
    assert deid.screener is not None and isinstance(deid.screener.engine(), TextDetector)


def test_a_vertical_label_and_text_over_anatomy_are_redacted() -> None:
    # CT_small (128x128) is enlarged for OCR; the ID runs up the left edge, the name crosses the body
    ds, boxes = _with_text(
        "CT_small.dcm", [(f"ID {PATIENT_ID}", 2, 8, True), (SURNAME, 20, 60, False)], size=12
    )
    record = Deidentifier(load_profile("research"), KEY).deidentify(ds)
    screen = record.pixel_screen
    assert screen is not None and screen["verified"] and screen["engine"]["engine"] == "rapidocr"
    shape = (int(ds.Rows), int(ds.Columns))
    assert _covered(screen, boxes[0], shape) >= 0.9  # vertical
    assert _covered(screen, boxes[1], shape) >= 0.9  # over the body


def test_tall_boxes_are_read_both_ways() -> None:
    engine = RapidOcrEngine()
    mask = _glyph_mask(SURNAME, 24)
    frame = np.zeros((mask.shape[1] + 20, mask.shape[0] + 20), np.uint8)
    frame[10 : 10 + mask.shape[1], 10 : 10 + mask.shape[0]][np.rot90(mask)] = 255
    boxes = engine.detect(frame, timeout_ms=20_000)
    assert boxes, "the detector finds the vertical line"
    read = " ".join(line.text for line in engine.recognize(frame, boxes, timeout_ms=20_000))
    assert SURNAME in read.upper().replace(" ", "")


def test_the_grey_detector_path_gives_rapidocrs_own_boxes() -> None:
    # the engine normalises one channel by lookup instead of RapidOCR's float64 pass over three
    # stacked copies: the tensor, and so every box, must be the same, at any size (resized to
    # a multiple of 32 or not, text or none)
    engine = RapidOcrEngine()
    mask = _glyph_mask(f"{SURNAME} {PATIENT_ID}", 18)
    rng = np.random.default_rng(7)
    for height, width in ((96, 320), (130, 257), (544, 544)):
        frame = np.asarray(rng.integers(0, 60, (height, width)), dtype=np.uint8)
        frame[10 : 10 + mask.shape[0], 8 : 8 + mask.shape[1]][mask[:, : width - 8]] = 230
        own, _ = engine._engine.text_det(np.stack([frame, frame, frame], axis=-1))
        grey = engine._detect_grey(frame)
        assert grey is not None and len(grey) > 0
        assert np.array_equal(np.asarray(own), grey)


def test_tighten_shrinks_across_the_line_only() -> None:
    mask = _glyph_mask(SURNAME, 16)
    image = np.full((mask.shape[0] + 16, mask.shape[1] + 16), 20, np.uint8)
    image[8 : 8 + mask.shape[0], 8 : 8 + mask.shape[1]][mask] = 230
    loose = (2, 2, image.shape[1] - 4, image.shape[0] - 4)
    tight = _tighten(image, loose)
    assert tight is not None
    x, y, w, h = tight
    rows = np.flatnonzero(mask.any(axis=1))
    assert (x, w) == (loose[0], loose[2])  # along the line: kept
    assert y == 8 + int(rows[0]) and h == int(rows[-1] - rows[0]) + 1  # across: the glyph rows
    noise = np.asarray(np.random.default_rng(0).integers(0, 255, image.shape), dtype=np.uint8)
    assert _tighten(noise, loose) is None  # no glyphs on a ground: nothing measured


def test_verification_re_detects_only_around_redactions() -> None:
    deid = Deidentifier(load_profile("research"), KEY)
    assert deid.screener is not None
    engine = deid.screener.engine()
    assert isinstance(engine, RapidOcrEngine)
    shapes: list[tuple[int, ...]] = []
    detect = engine.detect

    def counting(image: np.ndarray, *, timeout_ms: int) -> list:
        shapes.append(image.shape)
        return detect(image, timeout_ms=timeout_ms)

    engine.detect = counting  # type: ignore[method-assign]  # counting wrapper, same signature
    ds, _ = _with_text("CT_small.dcm", [(SURNAME, 4, 4, False)], size=12)
    record = deid.deidentify(ds)
    assert record.pixel_screen is not None and record.pixel_screen["boxes_redacted"]
    work = (2 * int(ds.Rows), 2 * int(ds.Columns))  # 128 px: enlarged twice for OCR
    whole = [s for s in shapes if sorted(s) == sorted(work)]
    windows = [s for s in shapes if sorted(s) != sorted(work)]
    assert whole and windows, shapes
    assert all(s[0] * s[1] < work[0] * work[1] for s in windows)


@pytest.mark.parametrize("engine", ["rapidocr", "tesseract"])
def test_both_engines_stay_selectable(engine: str) -> None:
    profile = load_profile("research")
    chosen = profile.model_copy(update={"burned_in": profile.burned_in.model_copy(update={"engine": engine})})
    deid = Deidentifier(chosen, KEY)
    assert deid.screener is not None and deid.screener.engine().name == engine


def test_a_service_warms_its_engine_up_and_says_when_it_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from imaging.deid.burned_in import OcrUnavailableError, PixelScreener

    screener = PixelScreener(load_profile("research").burned_in)
    assert screener.warm_up() and isinstance(screener.engine(), RapidOcrEngine)

    def missing(*_: object, **__: object) -> None:
        raise OcrUnavailableError("rapidocr-onnxruntime is not installed")

    monkeypatch.setattr(RapidOcrEngine, "__init__", missing)
    # engines are loaded once per process: a process that has none loaded yet
    from imaging.deid.burned_in import screen as screen_module

    monkeypatch.setattr(screen_module, "_ENGINES", {})
    assert PixelScreener(load_profile("research").burned_in).warm_up() is False
