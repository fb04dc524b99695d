"""Text detection and recognition on rendered frames: Tesseract 5 (LSTM) through tesserocr.

Recognised text is PHI: it lives only in memory, in :class:`TextLine` objects, and is never
logged, put in an exception message or returned to a caller outside this subpackage's
classification. Errors say what failed (timeout, engine missing), never what was read.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Box",
    "OcrEngine",
    "OcrError",
    "OcrTimeoutError",
    "OcrUnavailableError",
    "RapidOcrEngine",
    "TesseractEngine",
    "TextLine",
    "find_tessdata",
]

# (x, y, width, height) in pixels of the stored frame
Box = tuple[int, int, int, int]
_TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)


class OcrError(Exception):
    """The OCR engine failed; the message names the failure, never recognised text."""


class OcrTimeoutError(OcrError):
    """Recognition did not finish within its time limit."""


class OcrUnavailableError(OcrError):
    """No OCR engine (or no language data) is installed."""


@dataclass(frozen=True)
class TextLine:
    """One detected line: its box, the words' boxes, the recognised text (PHI) and confidence."""

    box: Box
    words: tuple[Box, ...]
    text: str
    confidence: float

    def __repr__(self) -> str:  # never print the text (PHI) by accident
        return f"TextLine(box={self.box}, words={len(self.words)}, confidence={self.confidence:.0f})"


class OcrEngine(Protocol):
    """Detects and reads text lines in an 8-bit greyscale image."""

    name: str
    reads_vertical: bool  # finds and reads lines printed top-to-bottom or bottom-to-top

    def read(self, image: np.ndarray, *, timeout_ms: int) -> list[TextLine]: ...

    def versions(self) -> dict[str, str]: ...


def find_tessdata() -> Path | None:
    """The directory holding ``eng.traineddata``: ``$TESSDATA_PREFIX`` or Debian's paths."""
    candidates = [os.environ.get("TESSDATA_PREFIX", ""), *_TESSDATA_DIRS]
    for candidate in candidates:
        if candidate and (Path(candidate) / "eng.traineddata").is_file():
            return Path(candidate)
    return None


@cache
def _tesserocr() -> Any:
    try:
        import tesserocr
    except ImportError as exc:
        raise OcrUnavailableError("tesserocr is not installed") from exc
    return tesserocr


class TesseractEngine:
    """Tesseract 5 LSTM, sparse-text page segmentation, one API object per thread.

    Sparse text (PSM 11) finds isolated labels anywhere in the frame, which is what burned-in
    annotations are; the engine's own inversion pass reads light-on-dark lines.
    """

    name = "tesseract"
    reads_vertical = False

    def __init__(self, tessdata: Path | None = None, language: str = "eng") -> None:
        self._tessdata = tessdata or find_tessdata()
        if self._tessdata is None:
            raise OcrUnavailableError("no eng.traineddata found (install tesseract-ocr-eng)")
        self._language = language
        self._local = threading.local()
        _tesserocr()

    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            tesserocr = _tesserocr()
            try:
                api = tesserocr.PyTessBaseAPI(
                    path=f"{self._tessdata}/",
                    lang=self._language,
                    psm=tesserocr.PSM.SPARSE_TEXT,
                    oem=tesserocr.OEM.LSTM_ONLY,
                )
            except RuntimeError as exc:
                raise OcrUnavailableError("tesseract could not load its language data") from exc
            # frames are given dark text on light (below), so the per-line inverted retry,
            # which costs about a third of the time, is not needed
            api.SetVariable("tessedit_do_invert", "0")
            self._local.api = api
        return api

    def versions(self) -> dict[str, str]:
        tesserocr = _tesserocr()
        model = Path(f"{self._tessdata}/{self._language}.traineddata")
        return {
            "engine": "tesseract",
            "tesseract": tesserocr.tesseract_version().split()[1],
            "tesserocr": str(tesserocr.__version__),
            "model": f"{self._language}.traineddata ({model.stat().st_size} bytes)",
        }

    def read(self, image: np.ndarray, *, timeout_ms: int) -> list[TextLine]:
        """Lines of text in ``image`` (2D uint8). Raises :class:`OcrTimeoutError` past the limit."""
        tesserocr = _tesserocr()
        api = self._api()
        frame = np.ascontiguousarray(image, dtype=np.uint8)
        if float(frame.mean()) < 128:  # Tesseract reads dark text on a light page best
            frame = 255 - frame
        height, width = frame.shape
        api.SetImageBytes(frame.tobytes(), width, height, 1, width)
        if not api.Recognize(timeout=max(1, int(timeout_ms))):
            api.Clear()
            raise OcrTimeoutError(f"recognition exceeded {timeout_ms} ms")
        lines: list[TextLine] = []
        iterator = api.GetIterator()
        if iterator is None:
            return lines
        level_line, level_word = tesserocr.RIL.TEXTLINE, tesserocr.RIL.WORD
        words: list[Box] = []
        texts: list[str] = []
        confidences: list[float] = []

        def flush() -> None:
            if words:
                x0 = min(b[0] for b in words)
                y0 = min(b[1] for b in words)
                x1 = max(b[0] + b[2] for b in words)
                y1 = max(b[1] + b[3] for b in words)
                box = (x0, y0, x1 - x0, y1 - y0)
                lines.append(TextLine(box, tuple(words), " ".join(texts), float(np.mean(confidences))))
            words.clear()
            texts.clear()
            confidences.clear()

        while True:
            if iterator.IsAtBeginningOf(level_line):
                flush()
            bbox = iterator.BoundingBox(level_word)
            try:
                text = iterator.GetUTF8Text(level_word)
            except RuntimeError:  # tesserocr's "No text returned": an empty page or element
                text = ""
            if bbox is not None and text and text.strip():
                x0, y0, x1, y1 = bbox
                words.append((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
                texts.append(text.strip())
                confidences.append(float(iterator.Confidence(level_word)))
            if not iterator.Next(level_word):
                break
        flush()
        return lines


class RapidOcrEngine:
    """RapidOCR: PaddleOCR's PP-OCRv4 detector (DBNet) and recogniser (SVTR) as ONNX models
    shipped in the ``rapidocr-onnxruntime`` wheel (Apache-2.0), run by onnxruntime on CPU.

    A learned text detector finds lines that touch anatomy where Tesseract's page layout
    analysis sees a picture; it costs several times Tesseract's time on CPU.
    """

    name = "rapidocr"
    reads_vertical = True  # tall detected boxes are turned before recognition

    def __init__(self, threads: int = 1, side: int = 736) -> None:
        try:
            import rapidocr_onnxruntime
        except ImportError as exc:
            raise OcrUnavailableError("rapidocr-onnxruntime is not installed") from exc
        self._module = rapidocr_onnxruntime
        self._engine = rapidocr_onnxruntime.RapidOCR(
            intra_op_num_threads=threads,
            inter_op_num_threads=1,
            det_limit_side_len=side,
            det_limit_type="max",
            use_cls=False,
        )
        self._lock = threading.Lock()  # one onnxruntime session set, used by one thread at a time

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {
            "engine": "rapidocr",
            "rapidocr-onnxruntime": version("rapidocr-onnxruntime"),
            "onnxruntime": version("onnxruntime"),
            "model": "ch_PP-OCRv4_det_infer.onnx + ch_PP-OCRv4_rec_infer.onnx",
        }

    def read(self, image: np.ndarray, *, timeout_ms: int) -> list[TextLine]:
        import time

        frame = np.ascontiguousarray(image, dtype=np.uint8)
        start = time.monotonic()
        with self._lock:
            result, _ = self._engine(np.stack([frame, frame, frame], axis=-1), use_cls=False)
        if (time.monotonic() - start) * 1000 > timeout_ms:
            raise OcrTimeoutError(f"recognition exceeded {timeout_ms} ms")
        lines: list[TextLine] = []
        for points, text, score in result or ():
            xs = [float(p[0]) for p in points]
            ys = [float(p[1]) for p in points]
            x0, y0 = int(max(0.0, min(xs))), int(max(0.0, min(ys)))
            box = (x0, y0, int(np.ceil(max(xs))) - x0, int(np.ceil(max(ys))) - y0)
            lines.append(TextLine(box, (box,), str(text), float(score) * 100))
        return lines
