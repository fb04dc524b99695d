"""Value-level helpers of the engine: text of a value, date variants and shifts, age bands, dummies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

__all__ = ["DUMMY", "TEXT_DUMMY", "age_band", "date_variants", "shift_value", "text_of"]

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


def date_variants(value: str) -> list[str]:
    """The ways a DA value may be written in free text."""
    if len(value) != 8 or not value.isdigit():
        return [value] if value else []
    y, m, d = value[:4], value[4:6], value[6:]
    return [value, f"{y}-{m}-{d}", f"{m}/{d}/{y}", f"{d}/{m}/{y}", f"{d}.{m}.{y}", f"{y}/{m}/{d}"]


def age_band(ds: Dataset) -> str:
    years: int | None = None
    age = text_of(ds.get("PatientAge", ""))
    if len(age) == 4 and age[:3].isdigit():
        years = int(age[:3]) if age[3] == "Y" else 0
    else:
        birth, study = text_of(ds.get("PatientBirthDate", "")), text_of(ds.get("StudyDate", ""))
        if len(birth) == 8 and len(study) == 8 and birth.isdigit() and study.isdigit():
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
