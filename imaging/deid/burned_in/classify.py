"""Is a recognised line PHI? Against the instance's own header values, then generic patterns.

OCR misreads: header tokens match within a small edit distance (anywhere in the line, spaces
ignored: OCR splits and joins words), dates match on their digits in any common order, and the
generic patterns are the free-text scrubber's (dates, long digit runs, titled names, labelled
identifiers) plus names from a dictionary. Text partly hidden (a line running onto bright
anatomy, a label cut by the frame) leaves fragments: a word of four or more characters found
inside a header identifier, or six digits of a header date in their screen order, is PHI too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from imaging.deid.scrub import GENERIC_PHI

__all__ = ["COMMON_NAMES", "PhiClassifier"]

_WORD = re.compile(r"[A-Za-z0-9]+")
_DIGITS = re.compile(r"\d")
# Given names and surnames frequent in census lists; OCR of any of them is treated as a name.
_COMMON_NAMES_TEXT = """
    JAMES JOHN ROBERT MICHAEL WILLIAM DAVID RICHARD JOSEPH THOMAS CHARLES CHRISTOPHER DANIEL MATTHEW
    ANTHONY MARK DONALD STEVEN PAUL ANDREW JOSHUA KENNETH KEVIN BRIAN GEORGE TIMOTHY RONALD EDWARD
    JASON JEFFREY RYAN JACOB GARY NICHOLAS ERIC JONATHAN STEPHEN LARRY JUSTIN SCOTT BRANDON BENJAMIN
    SAMUEL GREGORY ALEXANDER PATRICK FRANK RAYMOND JACK DENNIS JERRY MARY PATRICIA JENNIFER LINDA
    ELIZABETH BARBARA SUSAN JESSICA SARAH KAREN LISA NANCY BETTY MARGARET SANDRA ASHLEY KIMBERLY
    EMILY DONNA MICHELLE CAROL AMANDA MELISSA DEBORAH STEPHANIE REBECCA SHARON LAURA CYNTHIA
    KATHLEEN AMY ANGELA SHIRLEY ANNA BRENDA PAMELA EMMA NICOLE HELEN SAMANTHA KATHERINE CHRISTINE
    DEBRA RACHEL CAROLYN JANET CATHERINE MARIA HEATHER DIANE OLIVIA JULIA SOPHIA ISABELLA MIA
    CHARLOTTE AMELIA HARPER EVELYN ABIGAIL ELLA AVA GRACE SMITH JOHNSON WILLIAMS BROWN JONES GARCIA
    MILLER DAVIS RODRIGUEZ MARTINEZ HERNANDEZ LOPEZ GONZALEZ WILSON ANDERSON TAYLOR MOORE JACKSON
    MARTIN LEE PEREZ THOMPSON WHITE HARRIS SANCHEZ CLARK RAMIREZ LEWIS ROBINSON WALKER YOUNG ALLEN
    KING WRIGHT SCOTT TORRES NGUYEN HILL FLORES GREEN ADAMS NELSON BAKER HALL RIVERA CAMPBELL
    MITCHELL CARTER ROBERTS GOMEZ PHILLIPS EVANS TURNER DIAZ PARKER CRUZ EDWARDS COLLINS REYES
    STEWART MORRIS MORALES MURPHY COOK ROGERS GUTIERREZ ORTIZ MORGAN COOPER PETERSON BAILEY REED
    KELLY HOWARD RAMOS KIM COX WARD RICHARDSON WATSON BROOKS CHAVEZ WOOD JAMES BENNETT GRAY MENDOZA
    RUIZ HUGHES PRICE ALVAREZ CASTILLO SANDERS PATEL MYERS LONG ROSS FOSTER JIMENEZ DOE MULLER
    SCHMIDT SCHNEIDER FISCHER WEBER MEYER WAGNER BECKER SCHULZ HOFFMANN MARTIN BERNARD DUBOIS DURAND
    LEROY MOREAU ROSSI RUSSO FERRARI ESPOSITO BIANCHI ROMANO COLOMBO SILVA SANTOS OLIVEIRA SOUZA
    PEREIRA WANG ZHANG CHEN YANG HUANG ZHAO WU ZHOU SATO SUZUKI TAKAHASHI TANAKA WATANABE KOWALSKI
    NOWAK WISNIEWSKI JANSEN DEVRIES VANDENBERG PETERS HANSEN JOHANSSON ANDERSSON NILSSON
"""
COMMON_NAMES = frozenset(_COMMON_NAMES_TEXT.split())
# Words on scanner overlays that look like names or codes but are vocabulary.
_VOCABULARY_TEXT = """
    HEAD NECK CHEST ABDOMEN PELVIS SPINE BRAIN LUNG LIVER KIDNEY HEART KNEE HAND FOOT AXIAL SAGITTAL
    CORONAL LEFT RIGHT ANT POST SUP INF AP PA LAT KVP MAS MA SLICE THK MM CM FOV WINDOW LEVEL ZOOM
    GAIN DEPTH FREQ MHZ HZ FPS TIS TIB MI DB ROI SCOUT TOPOGRAM CONTRAST ARTERIAL VENOUS DELAY
    PORTAL PHASE IMAGE SERIES SE IM EX STANDARD BONE SOFT TISSUE FILTER PROBE PWR FRAME RATE CINE
    DYN MODE NORMAL
"""
_VOCABULARY = frozenset(_VOCABULARY_TEXT.split())


def _norm(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def _spells(token: str, text: str, *, anywhere: bool = False) -> bool:
    """Whether ``text`` spells ``token`` within an edit distance of 1 per 5 characters of the
    token (OCR swaps O/0, I/1, drops a letter); ``anywhere``: the token occurs in ``text``, the
    text around it free (OCR splits and joins words)."""
    if token == text or (anywhere and token in text):
        return True
    limit = len(token) // 5
    if limit == 0 or (len(text) < len(token) - limit if anywhere else abs(len(text) - len(token)) > limit):
        return False
    # edit distances of the token's prefixes to the text's prefixes (anywhere: to its substrings,
    # a match may start at any character)
    previous = [0] * (len(text) + 1) if anywhere else list(range(len(text) + 1))
    for i, ct in enumerate(token, 1):
        current = [i]
        for j, cx in enumerate(text, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ct != cx)))
        if min(current) > limit:  # rows never get cheaper
            return False
        previous = current
    return (min(previous) if anywhere else previous[-1]) <= limit


# the shortest fragment of a header identifier that counts (shorter ones match by chance)
_FRAGMENT = 4


# the shortest start or end of a header identifier that counts when both are seen in order
_END = 3


def _ends(token: str, text: str) -> bool:
    """Whether ``text`` shows the start and, after it, the end of ``token`` (at least _END
    characters each, six together) but not the whole: an identifier whose middle is hidden
    (by anatomy, or split by the detector and misread there)."""
    for first in range(len(token) - _END, _END - 1, -1):
        at = text.find(token[:first])
        if at < 0:
            continue
        rest = text[at + first :]
        last = max((k for k in range(_END, len(token) - first + 1) if token[-k:] in rest), default=0)
        return last >= _END and first + last >= 2 * _END
    return False


def _longest_common(value: str, text: str) -> tuple[int, int, int]:
    """The longest run ``value[start:end]`` that occurs in ``text`` (at ``at``)."""
    best = (0, 0, 0)
    for start in range(len(value)):
        for end in range(len(value), start + best[1] - best[0], -1):
            at = text.find(value[start:end])
            if at >= 0:
                best = (start, end, at)
                break
    return best


def _date_forms(value: str) -> set[str]:
    """Digit strings a DICOM date (YYYYMMDD) is written as on screen: 8 and 6 digit orders."""
    digits = "".join(ch for ch in value if ch.isdigit())
    if len(digits) != 8:
        return set()
    y, m, d = digits[:4], digits[4:6], digits[6:8]
    forms = {y + m + d, d + m + y, m + d + y, y[2:] + m + d, d + m + y[2:], m + d + y[2:]}
    # leading zeros dropped on screen (3/4/1961)
    forms |= {d.lstrip("0") + m.lstrip("0") + y, m.lstrip("0") + d.lstrip("0") + y}
    return forms


@dataclass
class PhiClassifier:
    """Decides whether recognised text carries PHI for one instance."""

    tokens: frozenset[str] = field(default_factory=frozenset)  # normalised header tokens
    dates: frozenset[str] = field(default_factory=frozenset)  # digit forms of header dates

    @classmethod
    def from_header(cls, identifiers: Iterable[str], dates: Iterable[str]) -> PhiClassifier:
        tokens: set[str] = set()
        for value in identifiers:
            for part in re.split(r"[\^\s,;:/\\=()-]+", value or ""):
                token = _norm(part)
                if len(token) >= 3 and token not in _VOCABULARY:
                    tokens.add(token)
            whole = _norm(value or "")
            if len(whole) >= 4:
                tokens.add(whole)
        forms: set[str] = set()
        for value in dates:
            forms |= _date_forms(value)
        return cls(frozenset(tokens), frozenset(f for f in forms if len(f) >= 6))

    def reasons(self, text: str) -> list[str]:
        """Why ``text`` is PHI (kinds, not values): empty when it is not."""
        found: list[str] = []
        words = [_norm(w) for w in _WORD.findall(text)]
        squeezed = _norm(text)
        if (
            self.tokens
            and any(
                w in self.tokens or (len(w) >= 5 and any(_spells(t, w) for t in self.tokens if len(t) >= 5))
                for w in words
            )
        ) or (self.tokens and any(len(t) >= 6 and _spells(t, squeezed, anywhere=True) for t in self.tokens)):
            found.append("header_value")
        elif self.tokens and any(
            len(w) >= _FRAGMENT and w not in _VOCABULARY and any(len(t) >= 6 and w in t for t in self.tokens)
            for w in words
        ):
            found.append("header_fragment")
        elif any(_ends(t, squeezed) for t in self.tokens if len(t) >= 2 * _END):
            found.append("header_ends")
        digits = "".join(_DIGITS.findall(text))
        if self.dates and len(digits) >= 6:
            windows = {digits[i : i + 6] for i in range(len(digits) - 5)}
            if any(form in digits for form in self.dates) or any(
                window in form for form in self.dates if len(form) == 8 for window in windows
            ):
                found.append("header_date")
        if GENERIC_PHI.search(text):
            found.append("generic_pattern")
        if any(w in COMMON_NAMES for w in words if len(w) >= 3):
            found.append("name_dictionary")
        return found

    def is_phi(self, text: str) -> bool:
        return bool(self.reasons(text))

    def missing(self, text: str) -> tuple[int, int]:
        """Characters of the header value that ``text`` shows only in part, not seen before and
        after what it shows: (0, 0) when it shows a value whole, or none in part. A line whose
        ends ran onto bright anatomy reads as the middle of an identifier or date ("12.2017" of
        03.12.2017 misses two digits before); the screener extends the redaction by that many
        characters. The value explained best is the one with the longest run in the text (the
        shortest such value: the most specific)."""
        squeezed = _norm(text)
        digits = "".join(_DIGITS.findall(text))
        candidates = [(t, squeezed, _FRAGMENT) for t in self.tokens if len(t) >= 6]
        candidates += [(form, digits, 6) for form in self.dates if len(form) == 8]
        matches = []  # (value, text it is sought in, start, end, at)
        for value, seen, shortest in candidates:
            start, end, at = _longest_common(value, seen)
            if end - start >= shortest:
                matches.append((value, seen, start, end, at))
        if not matches:
            return 0, 0
        value, seen, start, end, at = min(matches, key=lambda m: (m[2] - m[3], len(m[0])))
        # what precedes the match in the text (a label: "DOB") does not stand for the value
        before = max(0, start - at)
        after = max(0, (len(value) - end) - (len(seen) - (at + end - start)))
        return before, after
