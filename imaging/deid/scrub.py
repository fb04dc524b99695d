"""Clean free text: remove identifiers taken from the header plus generic PHI patterns."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GENERIC_PHI", "REDACTED", "TextScrubber"]

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
#: The generic PHI patterns (dates, long digit runs, titled names...), also applied to OCR text.
GENERIC_PHI = _GENERIC_RE
_SPLIT = re.compile(r"[\^\s,;:/\\]+")


def _replace_token(text: str, lowered: str, token_lower: str) -> str:
    """Replace whole-token occurrences (not inside a longer word or number), case-insensitive."""
    out: list[str] = []
    start = 0
    width = len(token_lower)
    position = lowered.find(token_lower)
    while position != -1:
        end = position + width
        before = lowered[position - 1] if position else " "
        after = lowered[end] if end < len(lowered) else " "
        if not (before.isascii() and before.isalnum()) and not (after.isascii() and after.isalnum()):
            out.append(text[start:position])
            out.append(REDACTED)
            start = end
        position = lowered.find(token_lower, position + 1 if start <= position else start)
    out.append(text[start:])
    return "".join(out)


@dataclass
class TextScrubber:
    """Removes known identifiers (whole tokens, case-insensitive) and generic PHI patterns.

    Known tokens are found by plain substring search with a boundary check: a regex per
    instance cost more to compile than all the cleaning it did.
    """

    tokens: frozenset[str]
    ordered: tuple[tuple[str, str], ...] = ()
    lowered: tuple[str, ...] = ()  # the lowercase tokens of ``ordered``, in its order
    starred: bool = False  # a token holds "*", which REDACTED could complete

    def __post_init__(self) -> None:
        # longest first, so "John Doe" goes before "John"; (token, lowercase token)
        self.ordered = tuple((t, t.lower()) for t in sorted(self.tokens, key=len, reverse=True))
        self.lowered = tuple(low for _, low in self.ordered)
        self.starred = any("*" in low for low in self.lowered)

    def mentions(self, lowered_text: str) -> bool:
        """True when a known token occurs in ``lowered_text`` (as a substring: a superset of
        what :meth:`clean` replaces). The search loop runs in C, not per token in Python."""
        return any(map(lowered_text.__contains__, self.lowered))

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

    def clean(self, text: str, *, generic: bool = True) -> str:
        """``text`` with every identifier replaced by ``***``.

        ``generic=False`` removes only the identifiers known from the header, for values drawn
        from a coding scheme (a SNOMED or DCM code value is a digit run, not an identifier).
        """
        if not text:
            return text
        lowered = text.lower()
        # Only the tokens the text holds (found in C), longest first as in ``ordered``. In ASCII
        # text (lowercased character by character) a token can only appear through a
        # replacement if it holds the replacement's "*": then, or for other text, every token
        # is tried, as before.
        if self.starred or not text.isascii():
            candidates: Iterable[str] = self.lowered
        else:
            candidates = list(filter(lowered.__contains__, self.lowered))
        for low in candidates:
            if low in lowered:
                text = _replace_token(text, lowered, low)
                lowered = text.lower()
        return _GENERIC_RE.sub(REDACTED, text) if generic else text
