"""Clean free text: remove identifiers taken from the header plus generic PHI patterns."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["REDACTED", "TextScrubber"]

REDACTED = "***"

_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_GENERIC = [
    r"\b(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])\b",  # 2021-03-04
    r"\b(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|[12]\d|3[01])[-/.](?:19|20)?\d{2}\b",  # 04/03/2021
    r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b",  # 20210304
    rf"\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}}\b",  # March 4, 2021
    rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_MONTHS})\.?,?\s+(?:19|20)\d{{2}}\b",  # 4 March 2021
    r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b",  # e-mail
    r"(?:\+|\b)\d[\d ()./-]{6,}\d\b",  # phone numbers, MRNs, long digit runs
    r"\b\d{5,}\b",  # identifiers
    r"\b(?:dr|doctor|prof|mr|mrs|ms|miss)\.?\s+[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)?",  # titled names
    r"\b(?:MRN|ID|SSN|NHS|DOB|ACC)\s*[:#]?\s*[\w-]*\d[\w-]*",  # labelled identifiers
]
_GENERIC_RE = re.compile("|".join(f"(?:{p})" for p in _GENERIC), re.IGNORECASE)
_SPLIT = re.compile(r"[\^\s,;:/\\]+")


@dataclass
class TextScrubber:
    """Removes known identifiers (exact tokens, case-insensitive) and generic patterns."""

    tokens: frozenset[str]
    _pattern: re.Pattern[str] | None = None

    @classmethod
    def from_values(cls, values: Iterable[str]) -> TextScrubber:
        """Tokens from identifying header values: whole values and their name/address parts."""
        tokens: set[str] = set()
        for value in values:
            value = value.strip()
            if not value:
                continue
            tokens.add(value)
            tokens.add(value.replace("^", " ").strip())
            for part in _SPLIT.split(value):
                # Two-letter surnames (Li, Ng) are real; single letters are initials, too common.
                if (len(part) >= 2 and not part.isdigit()) or (part.isdigit() and len(part) >= 3):
                    tokens.add(part)
        return cls(frozenset(t for t in tokens if t))

    def _compiled(self) -> re.Pattern[str]:
        if self._pattern is None:
            known = sorted(self.tokens, key=len, reverse=True)
            parts = [rf"(?<![0-9A-Za-z]){re.escape(t)}(?![0-9A-Za-z])" for t in known]
            parts.append(_GENERIC_RE.pattern)
            self._pattern = re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE)
        return self._pattern

    def clean(self, text: str) -> str:
        """``text`` with every identifier replaced by ``***``."""
        if not text:
            return text
        return self._compiled().sub(REDACTED, text)
