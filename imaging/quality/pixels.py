"""What the quality report reads from each stored image: acquisition attributes, a hash of the
decoded pixels (exact duplicates whatever the header says) and a perceptual hash (near-duplicates).

Only non-identifying attributes are read; nothing here is logged.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass, field
from io import BytesIO
from typing import Any

import numpy as np

from imaging.decoding import PixelDataError, decode_pixels
from imaging.store import ContentStore, StoreError

__all__ = ["THUMBNAIL_SIZE", "ImageFacts", "correlation", "hamming", "read_facts"]

#: Side of the thumbnail that confirms a perceptual-hash match (uint8, 16 KiB per image).
THUMBNAIL_SIZE = 128


@dataclass
class ImageFacts:
    """Facts about one stored instance (``error`` set when its pixels cannot be used)."""

    sha256: str
    modality: str = "unknown"
    photometric: str = "unknown"
    bits_allocated: int = 0
    bits_stored: int = 0
    rows: int = 0
    columns: int = 0
    frames: int = 1
    pixel_spacing: str = "none"
    pixel_sha256: str | None = None
    phash: str | None = None  # 64-bit pHash, hex
    # missing-object | hash-mismatch | unparseable | no-pixel-data | undecodable | blank
    error: str | None = None
    thumbnail: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("thumbnail")
        return data


def _spacing(ds: Any) -> str:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value:
            try:
                return "\\".join(f"{float(v):.4g}" for v in value)
            except (TypeError, ValueError):
                return "invalid"
    return "none"


def _phash(frame: np.ndarray) -> tuple[str, np.ndarray]:
    """pHash of the frame scaled to 8 bits, and a ``THUMBNAIL_SIZE`` square thumbnail."""
    import imagehash
    from PIL import Image

    data = frame.astype(np.float64)
    low, high = float(np.min(data)), float(np.max(data))
    scaled = np.zeros(data.shape, dtype=np.uint8) if high <= low else (255 * (data - low) / (high - low))
    image = Image.fromarray(np.asarray(scaled, dtype=np.uint8))
    thumbnail = np.asarray(image.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BILINEAR))
    return str(imagehash.phash(image)), thumbnail


def read_facts(store: ContentStore, sha256: str, store_key: str) -> ImageFacts:
    """Read one object from the store (hash verified) and summarise its pixels."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    facts = ImageFacts(sha256=sha256)
    try:
        data = store.get(store_key)
    except StoreError as exc:
        facts.error = "hash-mismatch" if "does not match" in str(exc) else "missing-object"
        return facts
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, TypeError, OSError):
        facts.error = "unparseable"
        return facts
    facts.modality = str(ds.get("Modality", "") or "unknown")
    facts.photometric = str(ds.get("PhotometricInterpretation", "") or "unknown")
    facts.bits_allocated = int(ds.get("BitsAllocated", 0) or 0)
    facts.bits_stored = int(ds.get("BitsStored", 0) or 0)
    facts.rows = int(ds.get("Rows", 0) or 0)
    facts.columns = int(ds.get("Columns", 0) or 0)
    facts.frames = int(ds.get("NumberOfFrames", 1) or 1)
    facts.pixel_spacing = _spacing(ds)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        facts.error = "no-pixel-data"
        return facts
    try:
        pixels = np.asarray(decode_pixels(ds))
    except PixelDataError:  # over the decoded-size bound, unsupported syntax or corrupt
        facts.error = "undecodable"
        return facts
    facts.pixel_sha256 = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    frame = pixels
    if facts.frames > 1:
        frame = pixels[facts.frames // 2]
    if frame.ndim == 3:  # colour: luminance
        frame = frame[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if frame.size == 0 or float(np.max(frame)) == float(np.min(frame)):
        facts.error = "blank"
        return facts
    facts.phash, facts.thumbnail = _phash(frame)
    return facts


def hamming(a: str, b: str) -> int:
    """Bit distance between two hex hashes of the same length."""
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails (1.0: same picture up to brightness and contrast)."""
    x = a.astype(np.float64).ravel()
    y = b.astype(np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator else 0.0
