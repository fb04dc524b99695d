"""De-identification profiles: YAML validated by pydantic (``configs/deid/*.yaml``)."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from governance.strict import StrictModel
from imaging.deid.errors import ProfileError
from imaging.deid.table import Option

__all__ = [
    "DEFAULT_PROFILE",
    "BurnedInMode",
    "BurnedInPolicy",
    "DeidProfile",
    "PixelCleaningRule",
    "SafePrivate",
    "UnlistedPolicy",
    "load_profile",
    "profile_dir",
]

DEFAULT_PROFILE = "research"

_SC_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF: a document of free text
    "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
    "1.2.840.10008.5.1.4.1.1.104.3",  # Encapsulated STL
    "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic
    "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic
]


class UnlistedText(StrEnum):
    CLEAN = "clean"
    REMOVE = "remove"


class UnlistedUnknown(StrEnum):
    REMOVE = "remove"
    KEEP = "keep"


class SafePrivate(StrictModel):
    """A private attribute known not to carry identity: block creator + element byte."""

    group: Annotated[int, Field(ge=0x0009, le=0xFFFF)]
    creator: str
    element: Annotated[int, Field(ge=0x00, le=0xFF)]

    @field_validator("group", "element", mode="before")
    @classmethod
    def _hex(cls, value: object) -> object:
        return int(value, 16) if isinstance(value, str) else value

    @field_validator("group")
    @classmethod
    def _odd(cls, value: int) -> int:
        if not value & 1:
            raise ValueError("private groups are odd")
        return value


class PixelCleaningRule(StrictModel):
    """Blank these rectangles (x, y, width, height) on every frame of matching instances."""

    modality: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    rows: int | None = None
    columns: int | None = None
    rectangles: list[tuple[int, int, int, int]] = Field(min_length=1)


class BurnedInMode(StrEnum):
    # every instance with pixels is screened by OCR; PHI text redacted and re-verified
    SCREEN = "screen"
    # the old strict rule: modalities and SOP classes that often carry text are quarantined
    # unread, BurnedInAnnotation YES is quarantined, the rest passes unscreened
    QUARANTINE = "quarantine"


class BurnedInPolicy(StrictModel):
    """How burned-in text in pixels is found and removed (or, strictly, avoided)."""

    mode: BurnedInMode = BurnedInMode.SCREEN
    # rapidocr: PP-OCRv4 ONNX text detector (DBNet) + recogniser; every region is detected, only
    # those whose redaction depends on what they say are read (finds text over anatomy and
    # vertical labels). tesseract: Tesseract 5 LSTM page segmentation (about 2.5x faster on the
    # generated corpus, recall 0.78 against 0.97: it takes text over anatomy for picture)
    engine: Literal["tesseract", "rapidocr"] = "rapidocr"
    # used by ``mode: quarantine`` only
    quarantine_modalities: list[str] = Field(default_factory=lambda: ["US", "XA", "RF", "ES", "XC", "OT"])
    quarantine_sop_classes: list[str] = Field(default_factory=lambda: list(_SC_CLASSES))
    # fixed rectangles blanked by device rule before screening (as RSNA CTP's pixel anonymizer)
    pixel_cleaning: list[PixelCleaningRule] = Field(default_factory=list)
    # redact every detected line outside anatomy, PHI-classified or not (OCR misreads small text)
    redact_all_text_outside_anatomy: bool = True
    # also read a stroke-enhanced render (anatomy flattened) for PHI over bright anatomy
    stroke_render: bool = True
    # black margin around each redacted box, in pixels
    margin: int = Field(default=2, ge=0, le=64)
    # multi-frame: frames screened (first, last and evenly between), boxes unioned over all
    max_frames_screened: int = Field(default=4, ge=1, le=1000)
    # volumes (one frame per instance): these modalities are screened on a series sample
    series_sampling_modalities: list[str] = Field(default_factory=lambda: ["CT", "MR", "PT", "NM"])
    series_screen_first: int = Field(default=1, ge=1)
    series_screen_every: int = Field(default=32, ge=1)
    # frames smaller than this (shorter side, pixels) are enlarged 2x for OCR: small fonts
    upscale_below: int = Field(default=256, ge=0)
    # OCR passes over the cleaned frames; each redacts what it still finds, the last must find
    # nothing (else pixel_phi_residual)
    verify_rounds: int = Field(default=2, ge=1, le=5)
    ocr_timeout_ms: int = Field(default=20_000, ge=100)
    # decoded pixels larger than this are quarantined (imaging.decoding's absolute cap)
    max_decoded_bytes: int = Field(default=2 * 1024**3, ge=1024)


class UnlistedPolicy(StrictModel):
    """What happens to attributes Table E.1-1 does not list (the profile states it)."""

    # Public free text not in the table (LO, SH, ST, LT, UT, UC): scrubbed of identifiers.
    text: UnlistedText = UnlistedText.CLEAN
    # Attributes missing from the data dictionary, and UN elements of unknown tags.
    unknown: UnlistedUnknown = UnlistedUnknown.REMOVE


class DeidProfile(StrictModel):
    """Basic Application Level Confidentiality Profile plus options, as one validated object."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    version: int = Field(ge=1)
    description: str = ""
    options: list[Option] = Field(default_factory=list)
    safe_private: list[SafePrivate] = Field(default_factory=list)
    unlisted: UnlistedPolicy = Field(default_factory=UnlistedPolicy)
    burned_in: BurnedInPolicy = Field(default_factory=BurnedInPolicy)
    # HIPAA Safe Harbor aggregates ages of 90 and over.
    cap_age_years: int | None = Field(default=90, ge=1)
    # Inputs larger than this are quarantined without being parsed.
    max_bytes: int = Field(default=2 * 1024**3, ge=1024)

    @model_validator(mode="after")
    def _consistent(self) -> DeidProfile:
        if {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES} <= set(
            self.options
        ):
            raise ValueError("full dates and modified dates options are mutually exclusive")
        if self.safe_private and Option.RETAIN_SAFE_PRIVATE not in self.options:
            raise ValueError("safe_private entries need the retain_safe_private option")
        return self

    @property
    def label(self) -> str:
        """``name@vN``: what lineage records."""
        return f"{self.name}@v{self.version}"

    @property
    def fingerprint(self) -> str:
        """Hash of the full profile, so two edits under one version still differ in lineage."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def profile_dir() -> Path:
    """``configs/deid`` of the checkout (profiles are project configuration, not package data)."""
    return Path(__file__).resolve().parents[2] / "configs" / "deid"


def load_profile(name_or_path: str | Path | None = None) -> DeidProfile:
    """A profile by name (``configs/deid/NAME.yaml``) or by file path; default: ``research``."""
    ref = str(name_or_path or DEFAULT_PROFILE)
    path = Path(ref)
    if not path.suffix:
        path = profile_dir() / f"{ref}.yaml"
    if not path.is_file():
        raise ProfileError(f"no de-identification profile {ref!r} (looked for {path})")
    try:
        data = yaml.safe_load(path.read_text())
        return DeidProfile.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ProfileError(f"invalid profile {path.name}: {exc}") from exc
