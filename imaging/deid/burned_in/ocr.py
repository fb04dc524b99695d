"""Text detection and recognition on rendered frames: Tesseract 5 (LSTM) through tesserocr.

Recognised text is PHI: it lives only in memory, in :class:`TextLine` objects, and is never
logged, put in an exception message or returned to a caller outside this subpackage's
classification. Errors say what failed (timeout, engine missing), never what was read.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Box",
    "OcrEngine",
    "OcrError",
    "OcrTimeoutError",
    "OcrUnavailableError",
    "RapidOcrEngine",
    "TesseractEngine",
    "TextDetector",
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


@runtime_checkable
class TextDetector(OcrEngine, Protocol):
    """An engine whose detector runs apart from its recogniser: the screener detects text
    everywhere and reads only the boxes whose redaction depends on what they say."""

    def detect(self, image: np.ndarray, *, timeout_ms: int) -> list[Box]: ...

    def recognize(self, image: np.ndarray, boxes: list[Box], *, timeout_ms: int) -> list[TextLine]: ...


@cache
def _rapidocr_versions() -> dict[str, str]:
    """The installed releases (read once per process: every screened instance records them in
    its lineage, and each metadata lookup scans site-packages, about 1.4 ms per instance)."""
    from importlib.metadata import version

    return {
        "engine": "rapidocr",
        "rapidocr-onnxruntime": version("rapidocr-onnxruntime"),
        "onnxruntime": version("onnxruntime"),
    }


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
    analysis sees a picture, and lines printed top-to-bottom or bottom-to-top: the detector
    finds them as tall boxes, and each tall box is read turned both ways, the better-scored
    reading kept (RapidOCR's own pipeline turns tall crops one way only). The frame is padded
    before detection so that labels touching its edge are found. Readings are remembered by
    crop content (in memory, bounded): a verification pass over a cleaned frame reads only
    what changed.
    """

    name = "rapidocr"
    reads_vertical = True  # tall detected boxes are read turned both ways

    _PAD = 16  # pixels added around the frame before detection
    _TALL = 1.5  # a box this many times taller than wide is a vertical line
    _MEMORY = 2048  # readings remembered (crop digest -> text, score)
    _DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"  # the wheel's models (Apache-2.0)
    _REC_MODEL = "ch_PP-OCRv4_rec_infer.onnx"

    def __init__(self, threads: int = 1, side: int = 1024) -> None:
        try:
            import rapidocr_onnxruntime
        except ImportError as exc:
            raise OcrUnavailableError("rapidocr-onnxruntime is not installed") from exc
        self._module = rapidocr_onnxruntime
        models = Path(rapidocr_onnxruntime.__file__).parent / "models"
        self._models = {"det": models / self._DET_MODEL, "rec": models / self._REC_MODEL}
        self._engine = rapidocr_onnxruntime.RapidOCR(
            det_model_path=str(self._models["det"]),
            rec_model_path=str(self._models["rec"]),
            intra_op_num_threads=threads,
            inter_op_num_threads=1,
            det_limit_side_len=side,
            det_limit_type="max",
            use_cls=False,
            # each crop read at its own width: a batch pads every crop to its widest (a long
            # line), which cost a fifth more time and changed a few readings
            rec_batch_num=1,
        )
        self._with_memory_arena(threads)
        self._lock = threading.Lock()  # one onnxruntime session set, used by one thread at a time
        self._readings: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._levels: np.ndarray | None = None  # the detector's normalised value of each level

    def _with_memory_arena(self, threads: int) -> None:
        """The detector's and recogniser's sessions again, with onnxruntime's CPU memory arena
        (RapidOCR turns it off): buffers are reused from frame to frame instead of allocated
        for every run, about a tenth of the detector's time on a 512 x 512 frame. The models
        and every other option are RapidOCR's own."""
        import onnxruntime

        for wrapper, model in (
            (self._engine.text_det.infer, self._models["det"]),
            (self._engine.text_rec.session, self._models["rec"]),
        ):
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 4
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = max(1, threads)
            options.inter_op_num_threads = 1
            options.enable_cpu_mem_arena = True
            wrapper.session = onnxruntime.InferenceSession(
                str(model), sess_options=options, providers=wrapper.session.get_providers()
            )

    def versions(self) -> dict[str, str]:
        return {**_rapidocr_versions(), "model": f"{self._DET_MODEL} + {self._REC_MODEL}"}

    def detect(self, image: np.ndarray, *, timeout_ms: int) -> list[Box]:
        """Axis-aligned boxes of the text regions in ``image`` (2D uint8), without reading them."""
        import time

        frame = np.ascontiguousarray(image, dtype=np.uint8)
        pad = self._PAD
        border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
        padded = np.pad(frame, pad, mode="constant", constant_values=int(np.median(border)))
        start = time.monotonic()
        with self._lock:
            found = self._detect_grey(padded)
        if (time.monotonic() - start) * 1000 > timeout_ms:
            raise OcrTimeoutError(f"detection exceeded {timeout_ms} ms")
        height, width = frame.shape
        boxes: list[Box] = []
        for points in found if found is not None else ():
            xs, ys = points[:, 0] - pad, points[:, 1] - pad
            x0, y0 = max(0, int(np.floor(xs.min()))), max(0, int(np.floor(ys.min())))
            x1, y1 = min(width, int(np.ceil(xs.max()))), min(height, int(np.ceil(ys.max())))
            if x1 > x0 and y1 > y0:
                boxes.append((x0, y0, x1 - x0, y1 - y0))
        return boxes

    def _detect_grey(self, image: np.ndarray) -> np.ndarray | None:
        """RapidOCR's detector on a 2D uint8 ``image`` given as three equal channels, computed
        once: its own resize (to a multiple of 32) on the one channel, its normalisation as a
        lookup of the 256 levels (the very values its float arithmetic gives each level), the
        same tensor, run and post-processing. Its own call stacks the grey image three times
        and normalises every pixel of every channel in float64: about a twentieth of screening
        time, for the same boxes."""
        detector = self._engine.text_det
        shape = (int(image.shape[0]), int(image.shape[1]))
        preprocess = detector.get_preprocess(max(shape))
        resized = preprocess.resize(image)  # per channel as on the stacked image: the same values
        if resized is None:
            return None
        if self._levels is None:
            ramp = np.repeat(np.arange(256, dtype=np.uint8).reshape(256, 1, 1), 3, axis=2)
            self._levels = np.asarray(preprocess.normalize(ramp), dtype=np.float32).reshape(256, 3)
        levels = self._levels
        tensor = np.empty((1, 3, *resized.shape), np.float32)
        for channel in range(3):
            np.take(levels[:, channel], resized, out=tensor[0, channel])
        predicted = detector.infer(tensor)[0]
        boxes, _ = detector.postprocess_op(predicted, shape)
        return np.asarray(detector.filter_tag_det_res(boxes, shape))

    def _read_crops(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text, score) per crop; remembered readings are not recomputed."""
        keys = [
            hashlib.blake2b(c.tobytes() + bytes(str(c.shape), "ascii"), digest_size=16).digest()
            for c in crops
        ]
        missing = [i for i, key in enumerate(keys) if key not in self._readings]
        if missing:
            batch = [np.ascontiguousarray(np.stack([crops[i]] * 3, axis=-1)) for i in missing]
            results, _ = self._engine.text_rec(batch)
            for i, (text, score) in zip(missing, results, strict=True):
                self._readings[keys[i]] = (str(text), float(score))
                while len(self._readings) > self._MEMORY:
                    self._readings.popitem(last=False)
        return [self._readings[key] for key in keys]

    def recognize(self, image: np.ndarray, boxes: list[Box], *, timeout_ms: int) -> list[TextLine]:
        """One line per box of ``image`` (2D uint8), read (tall boxes both ways), in box order."""
        import time

        frame = np.ascontiguousarray(image, dtype=np.uint8)
        crops: list[np.ndarray] = []
        owners: list[int] = []
        for index, (x, y, w, h) in enumerate(boxes):
            crop = frame[y : y + h, x : x + w]
            if crop.size == 0:
                continue
            if h >= self._TALL * w:  # vertical: bottom-to-top and top-to-bottom readings
                crops.extend((np.rot90(crop, k=-1), np.rot90(crop, k=1)))
                owners.extend((index, index))
            else:
                crops.append(crop)
                owners.append(index)
        start = time.monotonic()
        with self._lock:
            readings = self._read_crops(crops) if crops else []
        if (time.monotonic() - start) * 1000 > timeout_ms:
            raise OcrTimeoutError(f"recognition exceeded {timeout_ms} ms")
        best: dict[int, tuple[str, float]] = {}
        for owner, (text, score) in zip(owners, readings, strict=True):
            if owner not in best or score > best[owner][1]:
                best[owner] = (text, score)
        lines: list[TextLine] = []
        for index, box in enumerate(boxes):  # unread boxes too: the screener judges their shape
            text, score = best.get(index, ("", 0.0))
            lines.append(TextLine(box, (box,), text.strip(), score * 100))
        return lines

    def read(self, image: np.ndarray, *, timeout_ms: int) -> list[TextLine]:
        boxes = self.detect(image, timeout_ms=timeout_ms)
        return self.recognize(image, boxes, timeout_ms=timeout_ms) if boxes else []
