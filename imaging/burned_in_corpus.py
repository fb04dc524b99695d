"""A ground-truth corpus of burned-in text on real packaged DICOM, for tests and benchmarks.

``burn_text`` draws lines into the stored pixels of a real image (pydicom's test files and
deid-data: CT, MR, NM, DX, ultrasound, captures) with varied fonts, sizes, positions (corners,
edges, over anatomy), contrast (top of range, mid grey, faint), rotation (horizontal or
vertical) and colour, and records each line's box and whether it is PHI. PHI lines repeat
the header's own identifiers (name, ID, birth and study dates, accession, institution) in
the formats scanners print them; the other lines are scanner vocabulary and measurements.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from imaging.decoding import decode_pixels

__all__ = ["BurnedBox", "BurnedFile", "burn_corpus", "burn_text", "font_paths", "source_files"]

_SURNAMES = ["HARTWELL", "OKONKWO", "LINDQVIST", "MOREAU", "CASTELLANO", "NAKAMURA", "BRENNAN", "KOWALSKI"]
_GIVEN = ["MARGARET", "TOBIAS", "INGRID", "RAFAEL", "SUNITA", "EVANDER", "CLEMENTINE", "BARTHOLOMEW"]
_HOSPITALS = ["SAINT ALDHELM HOSPITAL", "NORTHFIELD GENERAL", "RIVERSIDE CLINIC"]
_OTHER = ["L", "R", "HEAD", "AXIAL", "5 cm", "W 400 L 40", "kVp 120", "SLICE 2.5mm", "FR 24Hz", "GAIN 58"]
_FONTS = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "STIXGeneral.ttf",
    "cmr10.ttf",
]
# Real images whose pixels carry no text of their own (the box list is the whole truth).
_PYDICOM_SOURCES = (
    "693_J2KI.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "CT_small.dcm",
    "examples_overlay.dcm",
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmd.dcm",
)
_DEID_SOURCES = ("animals/cat.dcm",)


@dataclass(frozen=True)
class BurnedBox:
    """One drawn line: (x, y, width, height) in stored pixels, PHI or not, and what it shows."""

    box: tuple[int, int, int, int]
    phi: bool
    kind: str  # name, id, birth_date, study_date, accession, institution, other


@dataclass
class BurnedFile:
    path: Path
    source: str
    modality: str
    frames: int
    boxes: list[BurnedBox] = field(default_factory=list)
    identifiers: dict[str, str] = field(default_factory=dict)

    @property
    def phi_boxes(self) -> list[BurnedBox]:
        return [b for b in self.boxes if b.phi]


def font_paths() -> list[Path]:
    """TrueType fonts that ship with matplotlib (a dependency): DejaVu, STIX, Computer Modern."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [root / name for name in _FONTS if (root / name).is_file()]


def source_files() -> list[Path]:
    """The packaged real images the corpus draws on (those installed here)."""
    from pydicom.data import get_testdata_file

    out: list[Path] = []
    for name in _PYDICOM_SOURCES:
        path = get_testdata_file(name)
        if path:
            out.append(Path(str(path)))
    try:
        import deid_data

        root = Path(deid_data.__file__).parent / "data"
        out.extend(root / name for name in _DEID_SOURCES if (root / name).is_file())
    except ImportError:
        pass
    return out


def _text_mask(text: str, font_path: Path, size: int, vertical: bool) -> tuple[np.ndarray, int, int]:
    """A boolean glyph mask of ``text`` (its full line box: ascenders and descenders)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path), size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    width, height = int(right - left) + 2, int(bottom - top) + 2
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font)
    mask = np.asarray(canvas) > 96
    if vertical:
        mask = np.rot90(mask)
    return mask, mask.shape[1], mask.shape[0]


def _phi_texts(rng: random.Random, ids: dict[str, str]) -> list[tuple[str, str]]:
    birth, study = ids["birth"], ids["study"]
    surname, given = ids["name"].split("^")
    date_forms = [
        lambda d: f"{d[:4]}-{d[4:6]}-{d[6:]}",
        lambda d: f"{d[6:]}/{d[4:6]}/{d[:4]}",
        lambda d: f"{d[4:6]}/{d[6:]}/{d[:4]}",
        lambda d: f"{d[6:]}.{d[4:6]}.{d[:4]}",
        lambda d: d,
    ]
    return [
        ("name", rng.choice([f"{surname}^{given}", f"{surname}, {given}", f"{given} {surname}", surname])),
        ("id", rng.choice([ids["id"], f"ID: {ids['id']}", f"MRN {ids['id']}"])),
        ("birth_date", rng.choice(["DOB ", "", "Born "]) + rng.choice(date_forms)(birth)),
        ("study_date", rng.choice(date_forms)(study)),
        ("accession", rng.choice([ids["accession"], f"Acc {ids['accession']}"])),
        ("institution", ids["institution"]),
    ]


def burn_text(ds: Dataset, rng: random.Random, *, lines: int = 5) -> list[BurnedBox]:
    """Set new identifiers in the header of ``ds``, draw PHI and other lines into every frame,
    store the pixels uncompressed (Explicit VR Little Endian); returns the boxes drawn."""
    ids = {
        "name": f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN)}",
        "id": f"{rng.randrange(10**6, 10**8)}",
        "birth": f"{rng.randrange(1930, 2005)}{rng.randrange(1, 13):02d}{rng.randrange(1, 28):02d}",
        "study": f"{rng.randrange(2010, 2025)}{rng.randrange(1, 13):02d}{rng.randrange(1, 28):02d}",
        "accession": f"A{rng.randrange(10**6, 10**8)}",
        "institution": rng.choice(_HOSPITALS),
    }
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = ids["name"], ids["id"], ids["birth"]
    ds.StudyDate, ds.AccessionNumber, ds.InstitutionName = ids["study"], ids["accession"], ids["institution"]
    ds.BurnedInAnnotation = rng.choice(["NO", "YES", None]) or "NO"
    pixels = np.array(decode_pixels(ds), copy=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stack = pixels if frames > 1 else pixels[np.newaxis]
    height, width = int(stack.shape[1]), int(stack.shape[2])
    colour = stack.ndim == 4
    lo, hi = float(stack.min()), float(stack.max())
    fonts = font_paths()
    chosen = rng.sample(_phi_texts(rng, ids), k=min(lines, 6))
    chosen += [("other", rng.choice(_OTHER)) for _ in range(max(1, lines // 3))]
    occupied = np.zeros((height, width), bool)
    boxes: list[BurnedBox] = []
    base = max(10, min(height, width) // 40)
    for kind, text in chosen:
        size = rng.randint(base, int(base * 2.2))
        vertical = rng.random() < 0.1
        mask, w, h = _text_mask(text, rng.choice(fonts), size, vertical)
        if w >= width - 4 or h >= height - 4:
            continue
        for _ in range(30):
            if rng.random() < 0.7:  # corners and edges, where devices print
                x = rng.choice([2, width - w - 2, rng.randrange(2, width - w - 1)])
                y = rng.choice([2, height - h - 2, rng.randrange(2, max(3, height // 6))])
            else:  # anywhere, anatomy included
                x, y = rng.randrange(2, width - w - 1), rng.randrange(2, height - h - 1)
            if not occupied[max(0, y - 4) : y + h + 4, max(0, x - 4) : x + w + 4].any():
                break
        else:
            continue
        occupied[y : y + h, x : x + w] = True
        contrast = rng.choice([1.0, 1.0, 0.85, 0.6])
        if colour:
            tint = rng.choice([(1, 1, 1), (1, 1, 0), (0, 1, 0), (0, 1, 1)])
            value = np.array([hi * contrast * c for c in tint], dtype=np.float64)
            region = stack[:, y : y + h, x : x + w]
            region[:, mask] = value.astype(stack.dtype)
        else:
            level = lo + (hi - lo) * contrast
            if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
                level = hi - (hi - lo) * contrast
            stack[:, y : y + h, x : x + w][:, mask] = np.asarray(level).astype(stack.dtype)
        boxes.append(BurnedBox((x, y, w, h), kind != "other", kind))
    ds.PixelData = (stack if frames > 1 else stack[0]).tobytes()
    ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if colour:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    for tag in (0x7FE00001, 0x7FE00002):
        if tag in ds._dict:
            del ds[tag]
    return boxes


def burn_corpus(
    out_dir: Path, *, copies: int, seed: int = 0, sources: Iterable[Path] | None = None
) -> list[BurnedFile]:
    """``copies`` burned variants of each source, written as ``out_dir/NNNN-CCC.dcm``."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[BurnedFile] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for number, source in enumerate(sources if sources is not None else source_files()):
            for copy in range(copies):
                ds = dcmread(source)
                boxes = burn_text(ds, rng)
                ds.SOPInstanceUID = generate_uid()
                ds.SeriesInstanceUID = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                target = out_dir / f"{number:04d}-{copy:03d}.dcm"
                ds.save_as(target, enforce_file_format=True)
                identifiers = {
                    "name": str(ds.PatientName),
                    "id": str(ds.PatientID),
                    "accession": str(ds.AccessionNumber),
                    "institution": str(ds.InstitutionName),
                }
                written.append(
                    BurnedFile(
                        target,
                        Path(source).name,
                        str(ds.get("Modality", "OT") or "OT"),
                        int(ds.get("NumberOfFrames", 1) or 1),
                        boxes,
                        identifiers,
                    )
                )
    return written
