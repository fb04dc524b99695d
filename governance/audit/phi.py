"""A guard that keeps obvious PHI out of audit details.

Audit entries must name objects by content hash, pseudonym or model version, never by a
patient's name, identifier, birth date or accession number. This refuses detail keys that
name such attributes and values that are not plain JSON; it cannot prove a free-text value
is PHI-free, so callers pass identifiers and counts, not descriptions.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["AuditPHIError", "check_details"]

_FORBIDDEN_KEYS = frozenset(
    {
        "patientname",
        "patientid",
        "patientbirthdate",
        "patientbirthtime",
        "birthdate",
        "dob",
        "dateofbirth",
        "otherpatientids",
        "otherpatientnames",
        "patientaddress",
        "address",
        "patientmothersbirthname",
        "patienttelephonenumbers",
        "phone",
        "telephone",
        "accessionnumber",
        "accession",
        "mrn",
        "medicalrecordnumber",
        "ssn",
        "socialsecuritynumber",
        "referringphysicianname",
        "performingphysicianname",
        "operatorsname",
        "institutionaddress",
        "original",
        "originalvalue",
        "originaluid",
        "originalpatientid",
    }
)
_MAX_STRING = 2048
_MAX_DEPTH = 6


class AuditPHIError(ValueError):
    """Audit details name a PHI attribute or are not plain JSON."""


def _normal(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _walk(value: Any, path: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise AuditPHIError(f"audit details nested deeper than {_MAX_DEPTH} at {path}")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditPHIError(f"audit detail keys must be strings at {path}")
            if _normal(key) in _FORBIDDEN_KEYS:
                raise AuditPHIError(f"audit details may not contain {key!r} (PHI)")
            _walk(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, str):
        if len(value) > _MAX_STRING:
            raise AuditPHIError(f"audit detail {path} longer than {_MAX_STRING} characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise AuditPHIError(f"audit detail {path} is not a finite number")
    elif value is not None and not isinstance(value, bool | int):
        raise AuditPHIError(f"audit detail {path} has type {type(value).__name__}, not JSON")


def check_details(details: dict[str, Any] | None) -> dict[str, Any]:
    """Validate and return a JSON-normalised copy (tuples become lists) of ``details``."""
    details = dict(details or {})
    _walk(details, "details", 0)
    normalised: dict[str, Any] = json.loads(json.dumps(details, allow_nan=False))
    return normalised
