"""Value-level helpers of the engine: text of a value, date variants and shifts, age bands, dummies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

__all__ = [
    "DUMMY",
    "RAW_CODECS",
    "TEXT_DUMMY",
    "age_band",
    "age_band_of",
    "date_variants",
    "raw_text",
    "shift_value",
    "text_of",
]

TEXT_DUMMY = "ANONYMIZED"
DUMMY: dict[str, Any] = {
    "PN": "ANONYMOUS",
    "DA": "19000101",
    "TM": "000000.00",
    "DT": "19000101000000",
    "AS": "000Y",
    "AE": "ANONYMOUS",
    "CS": "ANONYMIZED",
    "IS": "0",
    "DS": "0",
    "UR": "",
}


def text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


# Character sets whose values decode without pydicom (one Python codec, no code extensions):
# pydicom's default repertoire and ISO_IR 6 are read as ISO 8859-1, as pydicom reads them.
RAW_CODECS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
# VRs pydicom always decodes with its default encoding (ISO 8859-1), whatever the character set.
_DEFAULT_REPERTOIRE = frozenset({"UI", "CS", "AS", "DA", "DT", "TM"})
_MULTI_TEXT = frozenset({"LO", "SH", "UC"})
_SINGLE_TEXT = frozenset({"LT", "ST", "UT"})


def raw_text(value: bytes, vr: str, codec: str) -> str | None:
    """``text_of`` of the value pydicom would decode from ``value``, without decoding it through
    pydicom; None where the shortcut does not apply (other VRs, bytes ``codec`` cannot decode).

    Same stripping as pydicom's converters: trailing spaces and NULs off the whole value for
    the default-repertoire VRs and PN (names without component groups only), off each value
    for LO/SH/UC, off the text for LT/ST/UT.
    """
    try:
        if vr in _DEFAULT_REPERTOIRE:
            return value.decode("latin-1").rstrip(" \x00")
        if vr in _MULTI_TEXT:
            text = value.decode(codec)
            if "\\" not in text:
                return text.rstrip("\x00 ")
            return "\\".join(v.rstrip("\x00 ") for v in text.split("\\"))
        if vr in _SINGLE_TEXT:
            return value.decode(codec).rstrip("\x00 ")
        if vr == "PN" and b"=" not in value:  # groups: pydicom drops empty trailing ones
            return value.rstrip(b"\x00 ").decode(codec)
    except UnicodeDecodeError:
        return None
    return None


def date_variants(value: str) -> list[str]:
    """The ways a DA value may be written in free text."""
    if len(value) != 8 or not value.isdigit():
        return [value] if value else []
    y, m, d = value[:4], value[4:6], value[6:]
    return [value, f"{y}-{m}-{d}", f"{m}/{d}/{y}", f"{d}/{m}/{y}", f"{d}.{m}.{y}", f"{y}/{m}/{d}"]


def age_band(ds: Dataset) -> str:
    return age_band_of(
        text_of(ds.get("PatientAge", "")),
        text_of(ds.get("PatientBirthDate", "")),
        text_of(ds.get("StudyDate", "")),
    )


def age_band_of(age: str, birth: str, study: str) -> str:
    """The age band from PatientAge, else from PatientBirthDate and StudyDate (texts)."""
    years: int | None = None
    if len(age) == 4 and age[:3].isdigit():
        years = int(age[:3]) if age[3] == "Y" else 0
    elif len(birth) == 8 and len(study) == 8 and birth.isdigit() and study.isdigit():
        years = int(study[:4]) - int(birth[:4]) - ((study[4:]) < (birth[4:]))
    if years is None or years < 0:
        return "unknown"
    if years >= 90:
        return "90+"
    low = years // 10 * 10
    return f"{low}-{low + 9}"


def shift_value(value: str, vr: str, days: int) -> str:
    """Shift a DA or DT value by whole days; unparseable values become the dummy."""
    value = value.strip()
    if not value:
        return value
    if vr == "DA" and "-" in value:  # a range (query form)
        return "-".join(shift_value(part, vr, days) if part else "" for part in value.split("-"))
    try:
        if len(value) >= 8:
            shifted = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) + dt.timedelta(days=days)
            return shifted.strftime("%Y%m%d") + value[8:]
        if len(value) in (4, 6):  # DT to the year or month
            month = int(value[4:6]) if len(value) == 6 else 7
            anchor = dt.date(int(value[:4]), month, 15) + dt.timedelta(days=days)
            return anchor.strftime("%Y%m")[: len(value)]
    except ValueError:
        pass
    return DUMMY[vr]
