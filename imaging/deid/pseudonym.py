"""Keyed, deterministic replacements: UIDs, patient pseudonyms, date offsets, catalog lookups.

All are HMAC-SHA256 under sub-keys of the project key, so the same input gives the same
output on every run and machine sharing the key, and nothing is reversible without the
sealed map in the catalog.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from pydicom.uid import UID_dictionary

from governance.keys import ProjectKey

__all__ = ["PseudonymKind", "Pseudonymizer"]

# Shift window for dates: between 1 and 10 years into the past, whole days.
_MIN_SHIFT_DAYS = 365
_SPAN_DAYS = 9 * 365


class PseudonymKind:
    """Kinds of originals recorded in the sealed map."""

    PATIENT_ID = "patient_id"
    PATIENT_NAME = "patient_name"
    ACCESSION = "accession"
    STUDY_UID = "study_uid"
    SERIES_UID = "series_uid"
    SOP_UID = "sop_uid"


@dataclass
class Pseudonymizer:
    """Deterministic keyed replacements for one project key."""

    key: ProjectKey
    _uid_key: bytes = field(init=False, repr=False)
    _pseudonym_key: bytes = field(init=False, repr=False)
    _date_key: bytes = field(init=False, repr=False)
    _lookup_key: bytes = field(init=False, repr=False)
    _uid_cache: dict[str, str] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        # HKDF once per process, not per value: these run for every element of every file.
        self._uid_key = self.key.derive("uid")
        self._pseudonym_key = self.key.derive("pseudonym")
        self._date_key = self.key.derive("date")
        self._lookup_key = self.key.derive("lookup")

    @staticmethod
    def _mac(key: bytes, message: str) -> bytes:
        return hmac.new(key, message.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """``2.25.<decimal of 128 bits of HMAC>``; registered UIDs (SOP classes...) are kept."""
        original = original.strip().rstrip("\x00")
        if not original or original in UID_dictionary:
            return original
        cached = self._uid_cache.get(original)
        if cached is None:
            if len(self._uid_cache) > 100_000:
                self._uid_cache.clear()
            digest = self._mac(self._uid_key, original)[:16]
            cached = f"2.25.{int.from_bytes(digest, 'big')}"
            self._uid_cache[original] = cached
        return cached

    def patient(self, original_id: str, fallback: str = "") -> str:
        """Patient pseudonym ``RG<26 base32 chars>``; ``fallback`` (study UID) when the ID is empty."""
        basis = f"id:{original_id.strip()}" if original_id.strip() else f"study:{fallback}"
        digest = self._mac(self._pseudonym_key, basis)[:16]
        return "RG" + base64.b32encode(digest).decode().rstrip("=")

    def site(self, original: str) -> str:
        """A stable, non-identifying site label for an institution name."""
        if not original.strip():
            return "unknown"
        digest = self._mac(self._pseudonym_key, f"site:{original.strip().upper()}")
        return "SITE-" + digest.hex()[:8].upper()

    def date_offset_days(self, patient_basis: str) -> int:
        """Per-patient shift in whole days (negative: into the past); intervals are preserved."""
        value = int.from_bytes(self._mac(self._date_key, patient_basis)[:4], "big")
        return -(_MIN_SHIFT_DAYS + value % _SPAN_DAYS)

    def lookup(self, kind: str, original: str) -> str:
        """Catalog lookup key for an original identifier (HMAC hex; not reversible)."""
        return self._mac(self._lookup_key, f"{kind}:{original.strip()}").hex()
