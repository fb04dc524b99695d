"""Text that OCR sees only in part: misread or split identifiers, pieces of one line read apart,
a line cut short where it runs onto bright anatomy, and faint text on a light ground.

The classifier and the line helpers are tested on their own; the faint-text case runs the real
engine (RapidOCR) on a real packaged capture (pydicom's SC_rgb_jpeg_dcmd.dcm, light grey)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from governance.keys import ProjectKey
from imaging.decoding import decode_pixels
from imaging.deid import Deidentifier, load_profile
from imaging.deid.burned_in import PhiClassifier
from imaging.deid.burned_in.screen import _collinear_groups, _extend_along, _joined_readings
from tests import dicom_factory
from tests.unit.test_pixel_phi_detector import _glyph_mask

KEY = ProjectKey(bytes(range(32)))


@pytest.fixture(scope="module")
def classifier() -> PhiClassifier:
    return PhiClassifier.from_header(
        ["CASTELLANO^RAFAEL", "17799130", "A57517021", "NORTHFIELD GENERAL"], ["19780808", "20171208"]
    )


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        ("CASTEI lNO", "header_value"),  # misread and split: "CASTEI" alone is too far from the token
        ("RAFAE1 CASTELLAN0", "header_value"),
        ("Acc A5751702l", "header_value"),
        ("LLANO,RA", "header_fragment"),  # the start hidden by anatomy
        ("NORT", "header_fragment"),  # a vertical label's first piece
        ("12.2017", "header_date"),  # "08." of 08.12.2017 hidden
        ("1978", None),  # six digits are needed: a year alone is not a date of this instance
    ],
)
def test_partly_read_identifiers_are_phi(classifier: PhiClassifier, reading: str, reason: str | None) -> None:
    if reason is None:
        assert "header_date" not in classifier.reasons(reading)
    else:
        assert reason in classifier.reasons(reading)


@pytest.mark.parametrize("reading", ["W 400 L 40", "5 cm", "kVp 120", "HEAD", "AXIAL", "12.2019", "GAIN 58"])
def test_scanner_vocabulary_and_measurements_are_not(classifier: PhiClassifier, reading: str) -> None:
    assert classifier.reasons(reading) == []


def test_pieces_of_one_line_are_grouped_and_read_both_ways_when_vertical() -> None:
    pieces = [
        (284, 0, 18, 42),  # "2019" (a date printed bottom-to-top, split in two by the detector)
        (284, 48, 18, 40),  # "20.08"
        (287, 49, 12, 21),  # "0": the same place read again in another render
        (10, 10, 60, 20),  # a horizontal label ...
        (10, 36, 55, 20),  # ... and the one under it: stacked lines, not one line
        (90, 12, 70, 18),  # a word beside the first label, on its line
    ]
    groups = sorted(sorted(g) for g in _collinear_groups(pieces))
    assert groups == [[0, 1, 2], [3, 5]]
    readings = _joined_readings([(pieces[0], "2019"), (pieces[1], "20.08"), (pieces[2], "0")])
    assert readings == ["2019 20.08", "20.08 2019"]  # top-down, and bottom-up as printed
    date = PhiClassifier.from_header([], ["20190820"])
    assert ["header_date" in date.reasons(r) for r in readings] == [False, True]


def test_a_phi_line_cut_short_on_bright_anatomy_is_followed_along_its_strokes() -> None:
    rng = np.random.default_rng(7)
    image = np.full((80, 400), 30, np.uint8)
    image[:, :100] = 170 + rng.integers(0, 20, (80, 100), dtype=np.uint8)  # bright "bone" on the left
    mask = _glyph_mask("08.12.2017", 20)
    h, w = mask.shape
    x, y = 60, 30
    image[y : y + h, x : x + w][mask] = 250
    cut = (x + w // 3, y, w - w // 3, h)  # the detector found only the part on the dark ground
    grown = _extend_along(image, cut)
    assert grown[0] <= x + 2 and grown[0] + grown[2] >= x + w - 1
    assert (grown[1], grown[3]) == (y, h)  # across the line it is left as it was
    # a line on a plain ground, found whole, stays as it is
    plain = np.full((80, 400), 30, np.uint8)
    plain[y : y + h, 200 : 200 + w][mask] = 250
    assert _extend_along(plain, (200, y, w, h)) == (200, y, w, h)


def test_a_phi_line_is_not_followed_into_texture_at_its_own_level() -> None:
    """Fur or foliage in a photograph has strokes at the glyphs' level too, but they run on
    above and below the line's band: the box stays where the detector found the line."""
    rng = np.random.default_rng(11)
    image = np.full((120, 500), 30, np.uint8)
    texture = rng.random((120, 200)) < 0.12
    texture |= np.roll(texture, 1, axis=0) | np.roll(texture, 2, axis=0)  # short streaks
    image[:, 250:450][texture] = 250
    mask = _glyph_mask("08.12.2017", 20)
    h, w = mask.shape
    x, y = 240 - w, 50
    image[y : y + h, x : x + w][mask] = 250
    box = (x, y, w, h)
    grown = _extend_along(image, box)
    assert grown[0] + grown[2] <= x + w + 2  # not run on into the texture beside it
    assert grown[0] >= x - 2


def test_faint_white_text_on_a_light_capture_is_redacted() -> None:
    """White (255) on the capture's light grey (~242): 13 levels of contrast, found in the
    stroke render stretched by its neighbourhood (a frame-wide stretch leaves it too faint
    beside black print, whose counters are the frame's strongest strokes)."""
    ds = dcmread(dicom_factory.pydicom_file("SC_rgb_jpeg_dcmd.dcm"))
    pixels = np.array(decode_pixels(ds), copy=True)
    ds.PatientName, ds.PatientID = "OKONKWO^SUNITA", "8680455"
    mask = _glyph_mask("OKONKWO^SUNITA", 14)
    h, w = mask.shape
    x, y = 62, 135
    pixels[y : y + h, x : x + w][mask] = 255
    other = _glyph_mask("FR 24Hz", 14)  # black print elsewhere: the frame's strongest strokes
    pixels[230 : 230 + other.shape[0], 150 : 150 + other.shape[1]][other] = 0
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    record = Deidentifier(load_profile("research"), KEY).deidentify(ds)
    screen = record.pixel_screen
    assert screen is not None and screen["verified"]
    covered = np.zeros(pixels.shape[:2], bool)
    for bx, by, bw, bh in screen["boxes_redacted"]:
        covered[by : by + bh, bx : bx + bw] = True
    assert covered[y : y + h, x : x + w].mean() >= 0.9


@pytest.mark.parametrize("size", [(21, 21), (20, 21), (30, 8), (5, 4), (2, 2), (64, 13)])
def test_the_pre_screen_morphology_equals_scipys(size: tuple[int, int]) -> None:
    """The top-hats and local maximum run through OpenCV: pixel for pixel what SciPy's grey
    morphology gives (even sides included, where the two libraries anchor differently)."""
    from scipy import ndimage

    from imaging.deid.burned_in.render import local_maximum, tophats

    rng = np.random.default_rng(sum(size))
    image = rng.integers(0, 256, (70, 90), dtype=np.uint8)
    white, black = tophats(image, size)
    assert np.array_equal(white, ndimage.white_tophat(image, size=size))
    assert np.array_equal(black, ndimage.black_tophat(image, size=size))
    values = rng.random((40, 50)).astype(np.float32)
    assert np.array_equal(local_maximum(values, size[0]), ndimage.maximum_filter(values, size=size[0]))


def test_an_identifier_seen_at_both_ends_is_phi_and_a_partial_value_says_what_it_misses() -> None:
    """A line whose middle is hidden shows an identifier's start and end ("A25" ... "766");
    a line whose ends ran onto anatomy shows its middle ("12.2017" of 03.12.2017): the
    screener extends the redaction by the characters the header value has and the text lacks."""
    classifier = PhiClassifier.from_header(["A25406766", "CASTELLANO^MARIA"], ["20171203"])
    assert "header_ends" in classifier.reasons("CCA25 766")
    assert not classifier.reasons("KVP 120 MAS 250")  # scanner print: neither end of a value
    assert classifier.missing("12.2017") == (2, 0)  # "03" not seen before it
    assert classifier.missing("DOB 03.12.2017") == (0, 0)  # the whole date, after its label
    assert classifier.missing("ASTELLANO") == (1, 0)  # the surname, its first letter hidden
    assert classifier.missing("Acc A2540") == (0, 4)
    assert classifier.missing("A25406766") == (0, 0)
    assert classifier.missing("HEAD") == (0, 0)


def test_a_partial_phi_line_is_extended_by_the_characters_it_misses() -> None:
    from imaging.deid.burned_in.screen import _completed

    shape = (512, 512)
    # seven characters read in 140 pixels: two missing before, each 20 pixels and a quarter more
    assert _completed((200, 100, 140, 20), "12.2017", (2, 0), shape) == (150, 100, 190, 20)
    assert _completed((200, 100, 140, 20), "12.2017", (0, 0), shape) == (200, 100, 140, 20)
    # a vertical line may read either way up: both ends, by the larger count, clipped to the frame
    assert _completed((10, 30, 20, 140), "12.2017", (2, 1), shape) == (10, 0, 20, 220)
