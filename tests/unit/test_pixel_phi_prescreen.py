"""The pre-screen that spares OCR on frames with no structure a glyph needs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from imaging.burned_in_corpus import font_paths
from imaging.deid.burned_in.render import text_likely


def _text(size: int, *, background: int, ink: int, height: int = 256, width: int = 256) -> np.ndarray:
    canvas = Image.new("L", (width, height), background)
    font = ImageFont.truetype(str(font_paths()[0]), size)
    ImageDraw.Draw(canvas).text((10, height // 2), "ID 4471", fill=ink, font=font)
    return np.asarray(canvas)


@pytest.mark.parametrize("size", [6, 9, 14, 40])
@pytest.mark.parametrize(("background", "ink"), [(0, 255), (255, 0), (100, 140), (200, 170)])
def test_text_of_any_size_and_polarity_is_likely(size: int, background: int, ink: int) -> None:
    assert text_likely(_text(size, background=background, ink=ink))


def test_text_over_a_smooth_bright_region_is_likely() -> None:
    yy, xx = np.mgrid[0:256, 0:256]
    anatomy = (180 * np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / 6000.0)).astype(np.uint8)
    label = _text(12, background=0, ink=255)
    assert text_likely(np.maximum(anatomy, label))
    assert not text_likely(anatomy)


def test_flat_gradient_and_specks_are_not() -> None:
    assert not text_likely(np.full((300, 200), 90, np.uint8))
    ramp = np.tile(np.linspace(0, 255, 400).astype(np.uint8), (300, 1))
    assert not text_likely(ramp)
    specks = np.zeros((200, 200), np.uint8)
    specks[50, 50] = specks[120, 30] = specks[100:102, 150] = 255  # single pixels and 2-pixel dots
    assert not text_likely(specks)
    assert not text_likely(np.zeros((3, 500), np.uint8))
