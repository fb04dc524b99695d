"""Screen pixels for burned-in PHI text, redact it in every frame, OCR again to verify.

One :class:`PixelScreener` serves a de-identifier (all threads): it holds the OCR engine and
a bounded memory of series, so that a CT or MR series is screened on a sample of its slices
(the first ones, then every Nth, and every slice once text was found in the series), while
every single-frame radiograph, ultrasound or capture is screened.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from pydicom.dataset import Dataset

from imaging.decoding import (
    DecompressionLimitError,
    PixelDataError,
    UnsupportedSyntaxError,
    decode_pixels,
    frame_count,
)
from imaging.deid.burned_in.classify import PhiClassifier
from imaging.deid.burned_in.ocr import (
    Box,
    OcrEngine,
    OcrError,
    OcrTimeoutError,
    OcrUnavailableError,
    RapidOcrEngine,
    TesseractEngine,
    TextDetector,
    TextLine,
)
from imaging.deid.burned_in.render import (
    anatomy_mask,
    frame_luminance,
    renders,
    sample_frames,
    stroke_render,
    text_likely,
    tophats,
    voi_window,
)
from imaging.deid.errors import QuarantineError, QuarantineReason
from imaging.deid.profile import BurnedInPolicy

__all__ = ["PixelScreener", "ScreenResult"]

_T = TypeVar("_T")
_SERIES_MEMORY = 4096
# series whose reference slice is kept (at most 68 KB each for a 512 x 512 slice); a series
# without one has its next slice fully screened
_REFERENCE_MEMORY = 256
# instances whose sampling decision is remembered (series key + SOP Instance UID): an instance
# sent again (a resend after a lost store, a retried association) gets the decision it got the
# first time, so the same input gives the same output (BurnedInAnnotation NO only when screened
# in full and verified)
_DECISION_MEMORY = 65536
# the quiet-region check compares blocks of this many pixels a side (the smallest glyph read
# is 4 pixels: a line of text fills whole blocks)
_QUIET_BLOCK = 8
# and keeps this many pixels from blocks where something shows (anatomy moves between slices)
_QUIET_REACH = 16
# the least contrast (8-bit levels) a render shows text at and the screen still looks at it:
# the stroke render stretches strokes from _LOCAL_FLOOR levels of the full range; the
# pre-screen counts 24 levels (text_likely) in the windowed render
_FULL_CONTRAST = 10.0
_WINDOW_CONTRAST = 24.0
# the side of the blank frame a service's warm-up runs the engine on (a common CT/MR size)
_WARM_SIDE = 512
_PIXEL_DATA = 0x7FE00010
# frames are read at about this shorter side when they are much larger (text stays legible)
_OCR_SIDE = 768
# the margin along a line grows by one pixel per this many pixels of its thickness (a character
# missed at either end is about a thickness wide); across it, where the box was measured on the
# glyphs' own rows, by one per _MARGIN_ACROSS (anti-aliased edges, rounding of reduced frames)
_MARGIN_ALONG = 24
_MARGIN_ACROSS = 48
# lines not classified as PHI are redacted outside anatomy when read this confidently or shaped
# as a horizontal line (small print is often misread; texture read as text in a quarter-turned
# frame is tall and comes out at low confidence)
_CONFIDENT = 60.0
# pieces of one line are at most this many line thicknesses apart
_GROUP_GAP = 2.5
# a PHI line is followed along its strokes at most this many thicknesses past each end, through
# pixels within this many 8-bit levels of its glyphs' own level
_EXTEND_REACH = 3
_LEVEL_TOLERANCE = 10
# a header value's characters a PHI line did not show are this many of its characters wide
_COMPLETION = 1.25


_ENGINES: dict[tuple[int, str], OcrEngine] = {}
_ENGINES_LOCK = threading.Lock()


def _shared_engine(name: str) -> OcrEngine:
    """The process's engine of that kind, loaded on first use: every screener of the process
    (a de-identifier per ingest run or job) uses it, instead of loading its models again
    (RapidOCR's sessions: about 0.35 s of CPU). Keyed by process: a forked child loads its own.
    Engines are safe to share between threads (RapidOCR runs one call at a time; Tesseract
    keeps an API object per thread)."""
    key = (os.getpid(), name)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = RapidOcrEngine() if name == "rapidocr" else TesseractEngine()
            _ENGINES[key] = engine
        return engine


@dataclass
class ScreenResult:
    """What screening did to one instance: lineage material (boxes, never text)."""

    engine: dict[str, str]
    screened: bool
    frames_screened: int = 0
    lines_detected: int = 0
    phi_lines: int = 0
    boxes_redacted: list[Box] = field(default_factory=list)
    verified: bool = False
    series_boxes_applied: bool = False
    # a series' slice between samples whose quiet region (away from anatomy) was unchanged from
    # the series' reference slice (screened clean): not screened itself, and not verified
    series_checked: bool = False
    # any line classified as PHI in any pass (not lineage: the series' sampling reads it)
    phi_found: bool = field(default=False, repr=False)
    pixels: np.ndarray | None = None  # the cleaned pixels when something was redacted

    def lineage(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "screened": self.screened,
            "frames_screened": self.frames_screened,
            "lines_detected": self.lines_detected,
            "phi_lines": self.phi_lines,
            "boxes_redacted": [list(b) for b in self.boxes_redacted],
            "verified": self.verified,
            "series_boxes_applied": self.series_boxes_applied,
            "series_checked": self.series_checked,
        }


@dataclass
class _Series:
    seen: int = 0
    text_found: bool = False  # a screen of one of its slices redacted something


@dataclass(frozen=True)
class _Quiet:
    """The quiet region of a series' reference slice (the last one fully screened and found
    without text): blocks of _QUIET_BLOCK pixels where nothing shows, away from anatomy, each
    with its least and largest stored value, and the least change of a value a render shows at
    a contrast the screen counts (``full``: in the full-range renders; ``window``: inside the
    VOI window, whose render saturates outside it)."""

    shape: tuple[int, int]
    blocks: np.ndarray  # bool (block rows, block columns): the quiet region
    low: np.ndarray  # float64, the reference's least value per block
    high: np.ndarray  # float64, its largest
    full: float
    window: tuple[float, float, float] | None  # (bottom, top, least change) in stored values
    # text (none of it PHI) the reference's screen redacted: redacted in every slice checked
    boxes: tuple[Box, ...] = ()

    @classmethod
    def of(cls, frame: np.ndarray, ds: Dataset, boxes: tuple[Box, ...] = ()) -> _Quiet:
        """The reference made from ``frame`` (stored values; a slice screened without text).
        Quiet blocks are those in which no render
        shows anything (their values span less than the least change seen in the full-range
        renders and, clipped to the VOI window, in the windowed one: air, padding, a flat
        ground), and that lie at least _QUIET_REACH pixels from any other block: anatomy moves
        from slice to slice, and its edges must not reach the region checked."""
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        if frame.ndim != 2 or min(shape) < 4 * _QUIET_BLOCK:  # colour, or too small: nothing
            return cls(shape, np.zeros((0, 0), bool), np.zeros(0), np.zeros(0), 0.0, None, boxes)
        least, most = float(frame.min()), float(frame.max())
        full = (most - least) * _FULL_CONTRAST / 255.0
        voi = voi_window(ds)
        window = None if voi is None else (voi[0], voi[1], (voi[1] - voi[0]) * _WINDOW_CONTRAST / 255.0)
        low, high = (v.astype(np.float64) for v in _block_extremes(frame))
        flat = high - low <= full
        if window is not None:
            bottom, top, seen = window
            flat &= np.clip(high, bottom, top) - np.clip(low, bottom, top) <= seen
        import cv2

        reach = -(-_QUIET_REACH // _QUIET_BLOCK)
        kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
        blocks = cv2.erode(flat.view(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE) > 0
        return cls(shape, blocks, low[blocks], high[blocks], full, window, boxes)

    @property
    def empty(self) -> bool:
        """No quiet region (anatomy or texture everywhere, a colour or tiny frame): nothing to
        check, the series is sampled unchecked."""
        return not self.blocks.any()

    def holds(self, frame: np.ndarray) -> bool:
        """Whether ``frame`` (2D, stored values, the reference's geometry) changed nowhere in
        the quiet region by as much as a render would show: every block still spans no more
        than the least change seen in the full-range renders and, clipped to the VOI window,
        in the windowed one (something drawn inside a block), and no block's least or largest
        value moved past the reference's by as much (something covering whole blocks)."""
        if frame.ndim != 2 or frame.shape != self.shape:
            return False
        low, high = _block_extremes(frame)
        low, high = low[self.blocks].astype(np.float64), high[self.blocks].astype(np.float64)
        full = self.full
        if (high - low > full).any() or (high > self.high + full).any() or (low < self.low - full).any():
            return False
        if self.window is not None:
            bottom, top, least = self.window
            high, low = np.clip(high, bottom, top), np.clip(low, bottom, top)
            if (high - low > least).any():
                return False
            if (high - np.clip(self.high, bottom, top) > least).any():
                return False
            if (np.clip(self.low, bottom, top) - low > least).any():
                return False
        return True


_NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def _native_frame(ds: Dataset) -> np.ndarray | None:
    """The stored values of a single-frame, single-sample, 8- or 16-bit little-endian
    uncompressed ``ds`` read straight from its pixel data (bits above Bits Stored masked, or
    sign-extended for signed data): what the bounded decoder gives, without pydicom's pixel
    machinery (about 3 ms per 512 x 512 slice, as much as the header path). None for
    anything else (the caller decodes)."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax not in _NATIVE_SYNTAXES or _PIXEL_DATA not in ds._dict:
        return None
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        allocated, stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        samples = int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    data = ds.PixelData
    if (
        samples != 1
        or frames != 1
        or allocated not in (8, 16)
        or not 0 < stored <= allocated
        or not isinstance(data, bytes | bytearray)
        or len(data) < rows * columns * allocated // 8
        or rows < 1
        or columns < 1
    ):
        return None
    kind = {(8, False): "<u1", (8, True): "<i1", (16, False): "<u2", (16, True): "<i2"}[(allocated, signed)]
    values = np.frombuffer(data, dtype=kind, count=rows * columns).reshape(rows, columns)
    if stored < allocated:
        shift = allocated - stored
        values = (values << shift) >> shift if signed else values & ((1 << stored) - 1)
    return values


def _block_grid(shape: tuple[int, ...]) -> tuple[int, int]:
    return -(-int(shape[0]) // _QUIET_BLOCK), -(-int(shape[1]) // _QUIET_BLOCK)


def _block_extremes(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least and largest value of each _QUIET_BLOCK square of a 2D ``frame`` (the last row
    and column of blocks padded with the frame's edge): strided minimum and maximum over the
    rows, then the columns, some ten times faster than a reduction over two block axes."""
    rows, columns = _block_grid(frame.shape)
    step = _QUIET_BLOCK
    height, width = rows * step, columns * step
    if frame.shape != (height, width):
        frame = np.pad(frame, ((0, height - frame.shape[0]), (0, width - frame.shape[1])), mode="edge")
    low = frame[0::step].copy()
    high = low.copy()
    for offset in range(1, step):
        np.minimum(low, frame[offset::step], out=low)
        np.maximum(high, frame[offset::step], out=high)
    least, most = low[:, 0::step].copy(), high[:, 0::step].copy()
    for offset in range(1, step):
        np.minimum(least, low[:, offset::step], out=least)
        np.maximum(most, high[:, offset::step], out=most)
    return least, most


def _overlap(box: Box, mask: np.ndarray) -> float:
    x, y, w, h = box
    region = mask[y : y + h, x : x + w]
    return float(region.mean()) if region.size else 0.0


def _upscaled(box: Box, step: int, shape: tuple[int, ...]) -> Box:
    x, y, w, h = box
    x0, y0 = x * step, y * step
    return (x0, y0, min(shape[1], (x + w) * step) - x0, min(shape[0], (y + h) * step) - y0)


def _line_at(line: TextLine, factor: float, turned_height: int, shape: tuple[int, ...]) -> TextLine:
    """``line`` read in a work image (scaled by ``factor``; turned a quarter clockwise when
    ``turned_height`` is the work image's height) in the frame's own coordinates."""
    x, y, w, h = line.box
    if turned_height:  # (x, y) of the turned image is (y, H - 1 - x) of the work image
        x, y, w, h = y, turned_height - (x + w), h, w
    x0, y0 = int(x / factor), int(y / factor)
    x1, y1 = min(shape[1], int(np.ceil((x + w) / factor))), min(shape[0], int(np.ceil((y + h) / factor)))
    return TextLine((x0, y0, max(1, x1 - x0), max(1, y1 - y0)), (), line.text, line.confidence)


def _tighten(image: np.ndarray, box: Box) -> Box | None:
    """``box`` of an 8-bit ``image`` shrunk across its line (rows of a wide box, columns of a
    tall one) to the pixels that differ from its ground (the median of its edge) by at least a
    third of the largest difference and belong to strokes that reach half of the largest
    difference in the box's middle: the glyphs of a line on a plain ground. Along the line it
    is kept: a line crossing onto anatomy changes its ground there. A box whose pixels do not
    split into glyphs and ground (text over anatomy, texture) gives None."""
    x, y, w, h = box
    crop = image[y : y + h, x : x + w].astype(np.int16)
    if crop.shape[0] < 4 or crop.shape[1] < 4:
        return None
    edge = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
    difference = np.abs(crop - int(np.median(edge)))
    top = int(difference.max())
    if top < 16:
        return None
    glyph = difference >= max(12, top // 3)
    if glyph.mean() > 0.6:
        return None
    # the line a detector found runs through its box's middle: glyph pixels there reach half
    # their own largest difference, and fainter pixels count where they touch such strokes
    # (anti-aliased edges); anatomy at the box's edge that touches none does not
    import cv2

    quarter = (h if w >= h else w) // 4
    middle = difference[quarter : h - quarter] if w >= h else difference[:, quarter : w - quarter]
    strong = difference >= max(12, int(middle.max()) // 2)
    _, labels = cv2.connectedComponents(glyph.view(np.uint8), connectivity=8)
    cores = np.unique(labels[strong & glyph])
    glyph = np.isin(labels, cores[cores > 0])
    if not glyph.any():
        return None
    if w >= h:
        rows = np.flatnonzero(glyph.any(axis=1))
        return (x, y + int(rows[0]), w, int(rows[-1] - rows[0]) + 1)
    cols = np.flatnonzero(glyph.any(axis=0))
    return (x + int(cols[0]), y, int(cols[-1] - cols[0]) + 1, h)


def _clip(box: Box, width: int, height: int) -> Box:
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(width, box[0] + box[2]), min(height, box[1] + box[3])
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def _merge_overlapping(boxes: list[Box]) -> list[Box]:
    """Boxes replaced by the unions of those that overlap, until none do."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                if _iou(merged[i], merged[j]) > 0:
                    merged[i] = _union(merged[i], merged.pop(j))
                    changed = True
                    break
            if changed:
                break
    return merged


def _union(first: Box, second: Box) -> Box:
    x0, y0 = min(first[0], second[0]), min(first[1], second[1])
    x1 = max(first[0] + first[2], second[0] + second[2])
    y1 = max(first[1] + first[3], second[1] + second[3])
    return (x0, y0, x1 - x0, y1 - y0)


def _intersection(first: Box, second: Box) -> int:
    """The area two boxes share."""
    x0, y0 = max(first[0], second[0]), max(first[1], second[1])
    x1 = min(first[0] + first[2], second[0] + second[2])
    y1 = min(first[1] + first[3], second[1] + second[3])
    return max(0, x1 - x0) * max(0, y1 - y0)


def _iou(first: Box, second: Box) -> float:
    inter = _intersection(first, second)
    union = first[2] * first[3] + second[2] * second[3] - inter
    return inter / union if union > 0 else 0.0


def _join_lines(lines: list[TextLine]) -> list[TextLine]:
    """Words that sparse segmentation split apart, joined when they sit on one line (same
    band, gap under two heights): "MRN" and its number are classified together."""
    ordered = sorted(lines, key=lambda line: (line.box[1], line.box[0]))
    joined: list[TextLine] = []
    for line in ordered:
        x, y, w, h = line.box
        for i, other in enumerate(joined):
            ox, oy, ow, oh = other.box
            band = min(y + h, oy + oh) - max(y, oy)
            gap = max(x, ox) - min(x + w, ox + ow)
            similar = w >= h and ow >= oh and 0.6 * oh <= h <= oh / 0.6  # horizontal, one size
            if similar and band > 0.5 * min(h, oh) and gap < 2 * max(h, oh):
                x0, y0 = min(x, ox), min(y, oy)
                x1, y1 = max(x + w, ox + ow), max(y + h, oy + oh)
                left, right = (other, line) if ox <= x else (line, other)
                joined[i] = TextLine(
                    (x0, y0, x1 - x0, y1 - y0),
                    (),
                    f"{left.text} {right.text}",
                    min(line.confidence, other.confidence),
                )
                break
        else:
            joined.append(line)
    return joined


def _collinear(first: Box, second: Box) -> bool:
    """Whether two detected pieces lie on one line: the same thickness and band, each drawn
    along the line (wide pieces side by side, tall pieces one above the other), apart by less
    than a few thicknesses (a word hidden by bright anatomy, or the detector's own split)."""
    for axis in (0, 1):  # 0: horizontal line (x along), 1: vertical line (y along)
        along, across = axis, 1 - axis
        a_len, a_thick = first[2 + along], first[2 + across]
        b_len, b_thick = second[2 + along], second[2 + across]
        if a_len < a_thick or b_len < b_thick:
            continue
        if not 0.6 * b_thick <= a_thick <= b_thick / 0.6:
            continue
        band = min(first[across] + a_thick, second[across] + b_thick) - max(first[across], second[across])
        gap = max(first[along], second[along]) - min(first[along] + a_len, second[along] + b_len)
        if band > 0.5 * min(a_thick, b_thick) and gap < _GROUP_GAP * max(a_thick, b_thick):
            return True
    return False


def _collinear_groups(boxes: list[Box]) -> list[list[int]]:
    """Indices of ``boxes`` grouped into lines (pieces joined transitively), two or more each."""
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if _collinear(boxes[i], boxes[j]):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(boxes)):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _joined_readings(pieces: list[tuple[Box, str]]) -> list[str]:
    """The texts of one line's pieces joined in reading order: left to right, or (a vertical
    line) top to bottom and bottom to top. A piece read again inside a longer one (the same
    text found in two renders) is left out."""
    kept: list[tuple[Box, str]] = []
    for box, text in sorted(pieces, key=lambda piece: -len(piece[1])):
        if not text or any(_intersection(box, k) >= 0.6 * box[2] * box[3] for k, _ in kept):
            continue
        kept.append((box, text))
    if len(kept) < 2:
        return []
    vertical = sum(b[3] for b, _ in kept) > sum(b[2] for b, _ in kept)
    ordered = sorted(kept, key=lambda piece: piece[0][1] if vertical else piece[0][0])
    readings = [" ".join(text for _, text in ordered)]
    if vertical:
        readings.append(" ".join(text for _, text in reversed(ordered)))
    return readings


def _last_ink(ink: np.ndarray, columns: range, gap: int) -> int | None:
    """The last column of ``columns`` (walked in order) with ink before a run of more than
    ``gap`` columns without; None when there is none."""
    last, blank = None, 0
    for column in columns:
        if ink[column]:
            last, blank = column, 0
        else:
            blank += 1
            if blank > gap:
                break
    return last


def _extend_along(image: np.ndarray, box: Box) -> Box:
    """A PHI line's ``box`` in an 8-bit ``image``, extended along the line while glyph strokes
    continue in its band: a detector stops where a line runs onto bright anatomy, and what it
    cut off ("03." of a date) is PHI too. Strokes are what a top-hat the line's thickness wide
    keeps (with the polarity of the line's own glyphs) at the level the line's glyphs are
    drawn at (anatomy around it has its own levels); a column counts only when the strokes
    stay inside the band (texture at the glyphs' level, a photograph's fur or foliage, runs on
    above and below it). The walk crosses gaps up to a character wide and goes at most a few
    thicknesses each way. On a plain ground nothing continues and the box is unchanged."""
    x, y, w, h = box
    horizontal = w >= h
    thick = h if horizontal else w
    reach = _EXTEND_REACH * thick
    if thick < 4:
        return box
    # the band with half a thickness of context on each side, the line along the rows' axis 1
    context = thick // 2
    if horizontal:
        start, stop = max(0, x - reach), min(image.shape[1], x + w + reach)
        top, bottom = max(0, y - context), min(image.shape[0], y + h + context)
        strip = image[top:bottom, start:stop]
        inside = (y - top, y - top + h)
        inner = (x - start, x - start + w)
    else:
        start, stop = max(0, y - reach), min(image.shape[0], y + h + reach)
        top, bottom = max(0, x - context), min(image.shape[1], x + w + context)
        strip = image[start:stop, top:bottom].T
        inside = (x - top, x - top + w)
        inner = (y - start, y - start + h)
    if strip.size == 0 or strip.shape[1] <= inner[1] - inner[0]:
        return box
    band = strip[inside[0] : inside[1]]
    size = (strip.shape[0], max(3, thick))
    hats = tophats(strip, size)
    hat = max(hats, key=lambda candidate: int(candidate[inside[0] : inside[1], inner[0] : inner[1]].max()))
    own = int(hat[inside[0] : inside[1], inner[0] : inner[1]].max())
    if own < 24:
        return box
    # burned-in text is drawn at one level: the glyphs' own, where the strokes stand out most
    found = hat[inside[0] : inside[1], inner[0] : inner[1]] >= own / 2
    level = float(np.median(band[:, inner[0] : inner[1]][found]))
    strokes = (hat >= 24) & (np.abs(strip.astype(np.float32) - level) <= _LEVEL_TOLERANCE)
    outside = np.concatenate([strokes[: inside[0]], strokes[inside[1] :]]).any(axis=0)
    ink = strokes[inside[0] : inside[1]].any(axis=0) & ~outside
    before = _last_ink(ink, range(inner[0] - 1, -1, -1), thick)
    after = _last_ink(ink, range(inner[1], strip.shape[1]), thick)
    low = inner[0] if before is None else before
    high = inner[1] if after is None else after + 1
    if horizontal:
        return (start + low, y, high - low, h)
    return (x, start + low, w, high - low)


def _without(crop: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """``crop`` (2D) with ``boxes`` (its coordinates, clipped) painted in the median of the rest:
    what is left around redactions, without the edges of the black boxes themselves."""
    inside = np.zeros(crop.shape[:2], bool)
    for x, y, w, h in boxes:
        inside[max(0, y) : max(0, y + h), max(0, x) : max(0, x + w)] = True
    if not inside.any():
        return crop
    if inside.all():
        return np.zeros_like(crop)
    painted = crop.copy()
    painted[inside] = np.median(crop[~inside])
    return painted


def _completed(box: Box, text: str, missing: tuple[int, int], shape: tuple[int, ...]) -> Box:
    """A PHI line's ``box`` extended along the line by the characters of the header value its
    ``text`` did not show (``missing``: before, after), each a character of the text wide and
    a quarter more (_COMPLETION: separators, the "." of a date, are not counted). A vertical
    line is read either way up, so it is extended at both ends by the larger count."""
    before, after = missing
    if not (before or after) or not text:
        return box
    x, y, w, h = box
    if w >= h:
        step = _COMPLETION * w / len(text)
        x0, x1 = x - int(np.ceil(before * step)), x + w + int(np.ceil(after * step))
        return _clip((x0, y, x1 - x0, h), shape[1], shape[0])
    reach = int(np.ceil(max(before, after) * _COMPLETION * h / len(text)))
    return _clip((x, y - reach, w, h + 2 * reach), shape[1], shape[0])


def _grow(box: Box, margin: int, shape: tuple[int, int]) -> Box:
    """``box`` with ``margin`` pixels and more around it: along the line in proportion to its
    thickness (_MARGIN_ALONG), less across it (_MARGIN_ACROSS), clipped to the frame."""
    x, y, w, h = box
    thick = min(w, h)
    along, across = margin + thick // _MARGIN_ALONG, margin + max(1, thick // _MARGIN_ACROSS)
    dx, dy = (along, across) if w >= h else (across, along)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(shape[1], x + w + dx), min(shape[0], y + h + dy)
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def _inside_any(box: Box, boxes: list[Box]) -> bool:
    x, y, w, h = box
    return any(k[0] <= x and k[1] <= y and x + w <= k[0] + k[2] and y + h <= k[1] + k[3] for k in boxes)


def _merge(boxes: list[Box]) -> list[Box]:
    """Boxes without duplicates or boxes inside another."""
    unique = sorted(set(boxes), key=lambda b: -(b[2] * b[3]))
    kept: list[Box] = []
    for b in unique:
        if not any(
            k[0] <= b[0] and k[1] <= b[1] and b[0] + b[2] <= k[0] + k[2] and b[1] + b[3] <= k[1] + k[3]
            for k in kept
        ):
            kept.append(b)
    return sorted(kept)


class PixelScreener:
    """Finds, redacts and re-verifies burned-in PHI text under one :class:`BurnedInPolicy`."""

    def __init__(self, policy: BurnedInPolicy, engine: OcrEngine | None = None) -> None:
        self.policy = policy
        self._engine = engine
        self._engine_error: str | None = None
        self._lock = threading.Lock()
        self._series: OrderedDict[tuple[str, ...], _Series] = OrderedDict()
        self._references: OrderedDict[tuple[str, ...], _Quiet] = OrderedDict()
        self._decisions: OrderedDict[tuple[str, ...], bool] = OrderedDict()

    # -- engine -------------------------------------------------------------------------------

    def engine(self) -> OcrEngine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    try:
                        self._engine = _shared_engine(self.policy.engine)
                    except OcrUnavailableError as exc:
                        raise QuarantineError(QuarantineReason.PIXEL_OCR_UNAVAILABLE, str(exc)) from None
        return self._engine

    def warm_up(self) -> bool:
        """Load the engine and run it once on a blank frame, so that a service holds its models
        and inference buffers from start (memory and first-instance latency known up front).
        False when no engine can be loaded: instances with pixels will then be quarantined
        (``pixel_ocr_unavailable``), never passed unscreened."""
        try:
            engine = self.engine()
        except QuarantineError:
            return False
        blank = np.zeros((_WARM_SIDE, _WARM_SIDE), np.uint8)
        blank[_WARM_SIDE // 2 :, :] = 255  # an edge: the detector's whole path runs
        if isinstance(engine, TextDetector):
            engine.detect(blank, timeout_ms=self.policy.ocr_timeout_ms)
            engine.recognize(
                blank, [(0, _WARM_SIDE // 2 - 16, 96, 32)], timeout_ms=self.policy.ocr_timeout_ms
            )
        else:
            engine.read(blank, timeout_ms=self.policy.ocr_timeout_ms)
        return True

    # -- series sampling ----------------------------------------------------------------------

    def _series_key(self, ds: Dataset) -> tuple[str, ...]:
        return tuple(
            str(ds.get(k, "") or "")
            for k in ("SeriesInstanceUID", "Rows", "Columns", "WindowCenter", "WindowWidth")
        )

    def _series_slice(self, ds: Dataset, frames: int) -> tuple[_Series, bool, _Quiet | None] | None:
        """For a single-frame slice of a volume modality: its series' state, whether it is one
        of the series' sampled slices (the first ``series_screen_first`` of the series as the
        stream brings them, then every ``series_screen_every``th) and the series' reference.
        None for every other instance (screened in full)."""
        modality = str(ds.get("Modality", "") or "").upper()
        if frames != 1 or modality not in self.policy.series_sampling_modalities:
            return None
        if not ds.get("SeriesInstanceUID"):
            return None
        key = self._series_key(ds)
        instance = (*key, str(ds.get("SOPInstanceUID", "") or ""))
        first, every = self.policy.series_screen_first, self.policy.series_screen_every
        with self._lock:
            state = self._series.get(key)
            if state is None:
                state = self._series[key] = _Series()
                while len(self._series) > _SERIES_MEMORY:
                    self._series.popitem(last=False)
            else:
                self._series.move_to_end(key)
            decided = self._decisions.get(instance) if instance[-1] else None
            if decided is None:  # a new instance of the series: the next in the stream
                number = state.seen
                state.seen += 1
                sampled = number < first or (number - first + 1) % every == 0
                if instance[-1]:
                    self._decisions[instance] = sampled
                    while len(self._decisions) > _DECISION_MEMORY:
                        self._decisions.popitem(last=False)
            else:  # sent again: the decision it got the first time
                sampled = decided
                self._decisions.move_to_end(instance)
            reference = self._references.get(key)
        return state, sampled, reference

    def _remember(
        self, ds: Dataset, state: _Series, frame: np.ndarray | None, boxes: tuple[Box, ...] = ()
    ) -> None:
        """After a full screen of a series' slice: without PHI (``frame``: its pixels as
        cleaned, ``boxes``: what was redacted), it is the series' new reference; with PHI, or
        quarantined (``frame`` None), every later slice of the series is screened in full."""
        key = self._series_key(ds)
        reference = None if frame is None else _Quiet.of(frame, ds, boxes)
        with self._lock:
            if frame is None:
                state.text_found = True
            if state.text_found or reference is None:
                self._references.pop(key, None)
                return
            self._references[key] = reference
            self._references.move_to_end(key)
            while len(self._references) > _REFERENCE_MEMORY:
                self._references.popitem(last=False)

    # -- screening ----------------------------------------------------------------------------

    def screen(self, ds: Dataset, classifier: PhiClassifier) -> ScreenResult | None:
        """Screen ``ds`` (in place when PHI is redacted); None when it has no pixel data.

        Raises :class:`QuarantineError` with a pixel_* reason when the pixels cannot be
        decoded, OCR fails, or PHI text remains after redaction (boxes in the detail).
        """
        if _PIXEL_DATA not in ds._dict:
            return None
        frames = frame_count(ds)
        series = self._series_slice(ds, frames)
        engine = self.engine()
        versions = engine.versions()
        if series is not None:
            state, sampled, reference = series
            # a slice between samples of a series without PHI found so far: checked against
            # the series' reference (the last slice screened clean) where device text appears,
            # away from anatomy; any change there a render would show, a new geometry, or no
            # reference, and it is screened in full
            if not (sampled or state.text_found) and reference is not None:
                checked = self._checked(ds, reference, versions)
                if checked is not None:
                    return checked
        pixels = self._decode(ds)
        try:
            result = self._screen_pixels(ds, classifier, engine, versions, pixels, frames)
        except QuarantineError:
            if series is not None:  # text left, or OCR failed: every later slice in full
                self._remember(ds, series[0], None)
            raise
        if series is not None:
            # no PHI: the slice, as cleaned, is the series' new reference (with the boxes of any
            # other text it had, the device's); PHI: every later slice is screened in full
            cleaned = pixels if result.pixels is None else result.pixels
            self._remember(ds, series[0], None if result.phi_found else cleaned, tuple(result.boxes_redacted))
        return result

    def _checked(self, ds: Dataset, reference: _Quiet, versions: dict[str, str]) -> ScreenResult | None:
        """A series' slice between samples checked against the series' reference: its result
        when the check holds (the reference's boxes, text its screen redacted, redacted here
        too), None when it must be screened in full."""
        boxes = list(reference.boxes)
        if boxes:  # the stored pixels are written back: the bounded decoder's
            pixels = self._decode(ds)
            if pixels.ndim != 2 or pixels.shape != reference.shape:
                return None
            frame = self._redact(pixels[np.newaxis], boxes, ds)[0]
        else:
            native = _native_frame(ds)
            frame = self._decode(ds) if native is None else native
        if not (reference.empty or reference.holds(frame)):
            return None
        result = ScreenResult(engine=versions, screened=False, series_checked=not reference.empty)
        if boxes:
            result.series_boxes_applied, result.boxes_redacted, result.pixels = True, boxes, frame
        return result

    def _screen_pixels(
        self,
        ds: Dataset,
        classifier: PhiClassifier,
        engine: OcrEngine,
        versions: dict[str, str],
        pixels: np.ndarray,
        frames: int,
    ) -> ScreenResult:
        """Find, redact and re-verify text in the decoded ``pixels`` of ``ds``."""
        stack = pixels if frames > 1 else pixels[np.newaxis]
        display = self._display(stack, ds)
        indices = sample_frames(frames, self.policy.max_frames_screened)
        result = ScreenResult(engine=versions, screened=True, frames_screened=len(indices))
        shape = (int(stack.shape[1]), int(stack.shape[2]))
        redacted: list[Box] = []
        current = stack
        # Redact, then OCR the cleaned frames again: removing text changes how the page is
        # segmented, so a pass can find PHI the one before missed. Each pass that finds some
        # redacts it; the frames are verified once a pass over them finds no PHI and nothing
        # to redact. Still PHI after the last pass: quarantine. A detector engine (convolutional,
        # no page segmentation) re-detects only around what the pass before redacted: elsewhere
        # the frames, and so its detections, are unchanged.
        focus: list[Box] | None = None
        for round_number in range(self.policy.verify_rounds + 1):
            display = self._display(current, ds)
            found: list[Box] = []
            phi_boxes: list[Box] = []
            for index in indices:
                lines, redact = self._find(display[index], ds, classifier, engine, focus)
                if round_number == 0:
                    result.lines_detected += len(lines)
                    result.phi_lines += sum(1 for _, is_phi in redact if is_phi)
                found.extend(box for box, _ in redact)
                phi_boxes.extend(box for box, is_phi in redact if is_phi)
            result.phi_found = result.phi_found or bool(phi_boxes)
            margin = self.policy.margin
            grown = [_grow(b, margin, shape) for b in found]
            new = [b for b in _merge(grown) if not _inside_any(b, redacted)]
            if not new:
                result.verified = True
                break
            last = round_number == self.policy.verify_rounds
            residual = [b for b in _merge(phi_boxes) if not _inside_any(b, redacted)]
            if last and residual:
                boxes = ", ".join(str(b) for b in residual[:20])
                raise QuarantineError(
                    QuarantineReason.PIXEL_PHI_RESIDUAL, f"PHI text remains after redaction at {boxes}"
                )
            redacted = _merge(redacted + new)
            current = self._redact(current, new, ds)
            if isinstance(engine, TextDetector):
                focus = new
            if last:  # only lines not classified as PHI were left: redacted, and verified clean
                result.verified = True
        result.boxes_redacted = redacted
        if redacted:
            result.pixels = current if frames > 1 else current[0]
        return result

    def _decode(self, ds: Dataset) -> np.ndarray:
        try:
            return decode_pixels(ds, max_bytes=self.policy.max_decoded_bytes)
        except DecompressionLimitError as exc:
            raise QuarantineError(QuarantineReason.PIXEL_DECODE_LIMIT, str(exc)) from None
        except UnsupportedSyntaxError as exc:
            raise QuarantineError(QuarantineReason.PIXEL_UNSUPPORTED_SYNTAX, str(exc)) from None
        except PixelDataError as exc:
            raise QuarantineError(QuarantineReason.PIXEL_UNDECODABLE, str(exc)) from None

    @staticmethod
    def _display(stack: np.ndarray, ds: Dataset) -> np.ndarray:
        """Frames as shown: a palette's indices through its colour lookup table."""
        if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            try:
                return np.asarray(apply_color_lut(stack, ds))
            except (ValueError, KeyError, AttributeError, IndexError) as exc:
                raise QuarantineError(
                    QuarantineReason.PIXEL_UNDECODABLE, f"palette cannot be applied ({type(exc).__name__})"
                ) from None
        return stack

    def _ocr(self, image: np.ndarray, engine: OcrEngine, *, turn: bool = True) -> list[TextLine]:
        """Lines in ``image``, boxes in its own coordinates: read horizontally and (for an
        engine that does not find vertical lines itself) turned a quarter clockwise, for
        labels printed bottom-to-top along an edge; at a size OCR reads well (small frames
        enlarged, large ones reduced)."""
        work, factor = self._work(image)
        if not text_likely(work):  # no structure a glyph needs: nothing for OCR to read
            return []
        lines = [_line_at(line, factor, 0, image.shape) for line in self._read(work, engine)]
        if turn and not engine.reads_vertical:
            turned = np.ascontiguousarray(np.rot90(work, k=-1))
            lines.extend(
                _line_at(line, factor, work.shape[0], image.shape) for line in self._read(turned, engine)
            )
        # a line is thinner than an eighth of the frame; larger "lines" are texture read as text
        thickest = max(32, min(image.shape) // 8)
        return _join_lines([line for line in lines if min(line.box[2], line.box[3]) <= thickest])

    def _work(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """``image`` at a size OCR reads well (small frames enlarged, large ones reduced by area
        average: anti-aliased glyphs) and its scale factor."""
        side = min(image.shape)
        if 0 < side < self.policy.upscale_below:
            return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1), 2.0
        if side > 2 * _OCR_SIDE:
            step = side // _OCR_SIDE
            height, width = (image.shape[0] // step) * step, (image.shape[1] // step) * step
            blocks = image[:height, :width].reshape(height // step, step, width // step, step)
            return blocks.mean(axis=(1, 3)).astype(np.uint8), 1.0 / step
        return image, 1.0

    def _find_detected(
        self,
        frame: np.ndarray,
        ds: Dataset,
        classifier: PhiClassifier,
        engine: TextDetector,
        anatomy: np.ndarray | None,
        focus: list[Box] | None = None,
    ) -> tuple[list[TextLine], list[tuple[Box, bool]]]:
        """``_find`` for an engine with a separate detector: text regions are detected in every
        render (a line found in several is kept once); a region outside anatomy shaped as a line
        (either way) is redacted unread; every other region is read and redacted when its text
        is PHI (or, outside anatomy, read confidently)."""
        shape = frame.shape[:2]
        shown = renders(frame, ds)
        # the full-range render once more, turned a quarter clockwise: the detector splits a
        # long vertical label into pieces, and finds it whole as a horizontal line (only where
        # the other renders found something: no pieces, no label)
        full = 0 if frame.ndim == 3 else len(shown) - 1
        if self.policy.stroke_render:  # bright strokes on bright ground (anatomy, light captures)
            shown.append(stroke_render(frame))
        works: list[tuple[np.ndarray, float, int]] = []  # (work image, scale, turned height)
        for render in shown:
            work, factor = self._work(render)
            works.append((work, factor, 0))
        work, factor, _ = works[full]
        works.append((np.ascontiguousarray(np.rot90(work, k=-1)), factor, work.shape[0]))
        regions: list[tuple[Box, int, Box]] = []  # (box in the frame, work image, box in it)
        # thicker "lines" are texture; a detector's box is drawn a quarter looser than the glyphs
        thickest = max(32, min(shape) // 8) * 5 // 4
        for index, (work, factor, turned) in enumerate(works):
            if turned and not regions:  # a vertical label leaves pieces, at least, in the others
                continue
            for box in self._detect(work, factor, turned, engine, focus):
                framed = _line_at(TextLine(box, (), "", 0.0), factor, turned, shape).box
                if min(framed[2], framed[3]) > thickest:
                    continue
                for number, (seen, first, seen_work) in enumerate(regions):
                    if _iou(framed, seen) >= 0.5:  # one line in two renders: the union of both
                        same_way = bool(works[first][2]) == bool(turned)
                        regions[number] = (
                            _union(seen, framed),
                            first,
                            _union(seen_work, box) if same_way else seen_work,
                        )
                        break
                else:
                    regions.append((framed, index, box))
        found: list[TextLine] = []
        redact: list[tuple[Box, bool]] = []
        unread: dict[int, list[int]] = {}
        outside = [anatomy is not None and _overlap(framed, anatomy) < 0.5 for framed, _, _ in regions]

        def glyphs(number: int) -> Box:
            """The region shrunk to its glyphs across the line (detector boxes are drawn loose
            around a line), as measured in the render that found it first, or where its ground
            there is too busy to tell glyphs from it (text on a photograph's texture), in the
            other renders of the same geometry that can (the union of what they measure); along
            the line it spans what every render found (one may see further onto anatomy)."""
            framed, index, box = regions[number]
            work, factor, turned = works[index]
            tight = _tighten(work, box)
            if tight in (None, box) and not turned:
                # nothing measured, or pixels all across the box (a busy ground): what the
                # other renders of the same geometry measure, together
                for measured in (
                    _tighten(other, box) for other, _, way in works if not way and other is not work
                ):
                    if measured is not None and measured != box:
                        tight = measured if tight in (None, box) else _union(tight, measured)
            x, y, w, h = _line_at(TextLine(tight or box, (), "", 0.0), factor, turned, shape).box
            fx, fy, fw, fh = framed
            if fw >= fh:
                return _clip((fx, y, fw + 1, h + 1), shape[1], shape[0])
            return _clip((x, fy, w + 1, fh + 1), shape[1], shape[0])

        for number, (framed, index, _) in enumerate(regions):
            x, y, w, h = framed
            if outside[number] and max(w, h) >= 2 * min(w, h):
                found.append(TextLine(framed, (), "", 0.0))
                redact.append((glyphs(number), False))
            else:
                unread.setdefault(index, []).append(number)
        texts: dict[int, str] = {}
        phi: set[int] = set()
        for index, numbers in unread.items():
            work = works[index][0]
            boxes = [regions[n][2] for n in numbers]
            lines = self._call(engine.recognize, work, boxes, timeout_ms=self.policy.ocr_timeout_ms)
            for number, line in zip(numbers, lines, strict=True):
                x, y, w, h = regions[number][0]
                found.append(TextLine((x, y, w, h), (), line.text, line.confidence))
                texts[number] = line.text
                if classifier.is_phi(line.text):
                    phi.add(number)
                    box = _completed(glyphs(number), line.text, classifier.missing(line.text), shape)
                    redact.append((box, True))
                elif outside[number] and line.confidence >= _CONFIDENT:
                    redact.append((glyphs(number), False))
        # pieces of one line (split where it crosses anatomy, or by the detector) are judged
        # together, and a line with PHI in it is redacted whole, the gaps between pieces too
        for group in _collinear_groups([framed for framed, _, _ in regions]):
            pieces = [(regions[n][0], texts[n]) for n in group if n in texts]
            readings = [r for r in _joined_readings(pieces) if classifier.is_phi(r)]
            if any(n in phi for n in group) or readings:
                whole = glyphs(group[0])
                for number in group[1:]:
                    whole = _union(whole, glyphs(number))
                if readings:
                    whole = _completed(whole, readings[0], classifier.missing(readings[0]), shape)
                redact.append((whole, True))
        full_render = shown[full]
        return found, [(_extend_along(full_render, box) if is_phi else box, is_phi) for box, is_phi in redact]

    def _detect(
        self, work: np.ndarray, factor: float, turned: int, engine: TextDetector, focus: list[Box] | None
    ) -> list[Box]:
        """Text boxes in a work image (``turned``: the height of the image it was turned from),
        all of it, or only windows around the frame boxes in ``focus`` (with a line's height of
        context on each side, so text that ran on past a redaction is seen whole)."""
        if focus is None:
            if not text_likely(work):  # no structure a glyph needs: nothing to detect
                return []
            return self._call(engine.detect, work, timeout_ms=self.policy.ocr_timeout_ms)
        height, width = work.shape[:2]
        windows: list[Box] = []
        filled: list[Box] = []  # the redactions themselves, a little wider (resampled edges)
        for x, y, w, h in focus:
            x0, y0 = int(x * factor), int(y * factor)
            x1, y1 = int(np.ceil((x + w) * factor)), int(np.ceil((y + h) * factor))
            if turned:  # work (x, y) is (turned - 1 - y, x) of the turned image
                x0, y0, x1, y1 = turned - y1, x0, turned - y0, x1
            context = max(8, min(x1 - x0, y1 - y0))
            windows.append(
                _clip(
                    (x0 - 2 * context, y0 - context, x1 - x0 + 4 * context, y1 - y0 + 2 * context),
                    width,
                    height,
                )
            )
            filled.append((x0 - 2, y0 - 2, x1 - x0 + 4, y1 - y0 + 4))
        boxes: list[Box] = []
        for wx, wy, ww, wh in _merge_overlapping(windows):
            if ww < 8 or wh < 8:
                continue
            crop = np.ascontiguousarray(work[wy : wy + wh, wx : wx + ww])
            if not text_likely(_without(crop, [(fx - wx, fy - wy, fw, fh) for fx, fy, fw, fh in filled])):
                continue  # around the redaction, nothing a glyph needs: nothing left to detect
            for bx, by, bw, bh in self._call(engine.detect, crop, timeout_ms=self.policy.ocr_timeout_ms):
                boxes.append((bx + wx, by + wy, bw, bh))
        return boxes

    def _read(self, image: np.ndarray, engine: OcrEngine) -> list[TextLine]:
        return self._call(engine.read, image, timeout_ms=self.policy.ocr_timeout_ms)

    @staticmethod
    def _call(run: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """An engine call, its failures as quarantine reasons (never with recognised text)."""
        try:
            return run(*args, **kwargs)
        except OcrTimeoutError as exc:
            raise QuarantineError(QuarantineReason.PIXEL_OCR_TIMEOUT, str(exc)) from None
        except OcrUnavailableError as exc:
            raise QuarantineError(QuarantineReason.PIXEL_OCR_UNAVAILABLE, str(exc)) from None
        except OcrError as exc:
            raise QuarantineError(QuarantineReason.PIXEL_OCR_FAILED, str(exc)) from None
        except Exception as exc:  # the engine's own failure types; the text is never shown
            raise QuarantineError(
                QuarantineReason.PIXEL_OCR_FAILED, f"OCR engine failed ({type(exc).__name__})"
            ) from None

    def _find(
        self,
        frame: np.ndarray,
        ds: Dataset,
        classifier: PhiClassifier,
        engine: OcrEngine,
        focus: list[Box] | None = None,
    ) -> tuple[list[TextLine], list[tuple[Box, bool]]]:
        """Lines read in one frame, and the boxes to redact with whether each is PHI-classified;
        a detector engine given ``focus`` looks only around those boxes."""
        side = min(frame.shape[0], frame.shape[1])
        if side > 2 * _OCR_SIDE:
            # large frames: rendered and read at about _OCR_SIDE (area average: anti-aliased
            # glyphs), boxes scaled back; rendering full size cost more than reading
            step = side // _OCR_SIDE
            height, width = (frame.shape[0] // step) * step, (frame.shape[1] // step) * step
            import cv2

            # OpenCV's area resize by a whole factor is the block mean (to float rounding), some
            # ten times faster than NumPy's mean over two strided axes of a radiograph
            cropped = np.ascontiguousarray(frame[:height, :width], dtype=np.float32)
            small = cv2.resize(cropped, (width // step, height // step), interpolation=cv2.INTER_AREA)
            reduced = [(x // step, y // step, -(-w // step), -(-h // step)) for x, y, w, h in focus or ()]
            lines, boxes = self._find(small, ds, classifier, engine, reduced if focus is not None else None)
            shape = frame.shape[:2]
            return lines, [(_upscaled(box, step, shape), is_phi) for box, is_phi in boxes]
        found: list[TextLine] = []
        redact: list[tuple[Box, bool]] = []
        anatomy = None
        if self.policy.redact_all_text_outside_anatomy:
            luminance = frame_luminance(frame)
            low, high = float(luminance.min()), float(luminance.max())
            scaled = (luminance - low) * (255.0 / max(high - low, 1e-6))
            anatomy = anatomy_mask(scaled.astype(np.uint8))
        if isinstance(engine, TextDetector):
            return self._find_detected(frame, ds, classifier, engine, anatomy, focus)
        if self.policy.stroke_render:
            # PHI-classified lines only: texture read as text here never widens redaction
            for line in self._ocr(stroke_render(frame), engine, turn=False):
                found.append(line)
                if classifier.is_phi(line.text):
                    x, y, w, h = line.box
                    redact.append(((x, y, w + 1, h + 1), True))
        for render in renders(frame, ds):
            for line in self._ocr(render, engine):
                x, y, w, h = line.box
                box = (x, y, w + 1, h + 1)
                found.append(line)
                if classifier.is_phi(line.text):
                    redact.append((box, True))
                elif (
                    anatomy is not None
                    # read well, or shaped as a line (either way: vertical labels too)
                    and (line.confidence >= _CONFIDENT or max(w, h) >= 2 * min(w, h))
                    and w > 0
                    and h > 0
                    and _overlap(box, anatomy) < 0.5
                ):
                    redact.append((box, False))
        return found, redact

    @staticmethod
    def _fill_value(stack: np.ndarray, ds: Dataset) -> Any:
        """The stored value that displays black."""
        photometric = str(ds.get("PhotometricInterpretation", "")).upper()
        if photometric == "MONOCHROME1":
            return stack.max()
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            levels = np.arange(int(stack.min()), int(stack.max()) + 1, dtype=stack.dtype)
            try:
                colours = np.asarray(apply_color_lut(levels, ds)).reshape(len(levels), -1)
            except (ValueError, KeyError, AttributeError, IndexError):
                return stack.min()
            return levels[int(np.argmin(colours.astype(np.float64).sum(axis=1)))]
        if stack.ndim == 4:  # colour, as RGB after decoding
            return 0
        return stack.min()

    def _redact(self, stack: np.ndarray, boxes: list[Box], ds: Dataset) -> np.ndarray:
        cleaned = np.array(stack, copy=True)
        fill = self._fill_value(stack, ds)
        for x, y, w, h in boxes:
            cleaned[:, y : y + h, x : x + w, ...] = fill
        return cleaned
