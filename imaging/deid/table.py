"""PS3.15 Table E.1-1 as data, resolved into one concrete action per attribute for a profile."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from importlib import resources

__all__ = ["Action", "Option", "ResolvedTable", "TableRow", "load_table"]


class Action(StrEnum):
    """Actions of PS3.15 E.1.1, plus PSEUDONYM for the keyed patient identifiers."""

    DUMMY = "D"
    ZERO = "Z"
    REMOVE = "X"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"
    PSEUDONYM = "P"


class Option(StrEnum):
    """The option columns of Table E.1-1, with their CID 7050 codes."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain_longitudinal_full_dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain_longitudinal_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"

    @property
    def code(self) -> tuple[str, str]:
        """(CodeValue, CodeMeaning) in CID 7050, scheme DCM."""
        return _CID_7050[self]


_CID_7050: dict[Option, tuple[str, str]] = {
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_LONGITUDINAL_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
}
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_DATA_CODE = ("113101", "Clean Pixel Data Option")

# Keyed pseudonyms instead of Z/D for the two identifiers a study is matched on.
_PSEUDONYMISED = {0x00100010, 0x00100020}
# Listed as X, but Type 2C in the Patient Module (for animals): emptied, not removed, so
# that a conformant input stays conformant. An empty value carries nothing.
_EMPTY_NOT_REMOVE = {0x00102297, 0x00102299}


@dataclass(frozen=True)
class TableRow:
    """One row of Table E.1-1."""

    tag: str  # "00100010", "50xxxxxx", "60xx3000" or "private"
    name: str
    basic: str  # "X", "X/Z/D", ...
    options: dict[str, str]


def _concrete(basic: str) -> Action:
    """One action for a combination such as X/Z/D.

    The standard picks by the attribute's Type in the IOD at hand. Without IOD tables at run
    time the engine takes the choice that keeps every IOD valid and still leaks nothing: a
    dummy when D is allowed, else zero length; X/Z/U (reference sequences) keeps the sequence
    with its UIDs replaced. For X/Z sequences the engine removes what is Type 3 where it sits
    (see ``ResolvedTable.remove_or_zero``): an empty sequence is only valid where Type 2.
    """
    parts = basic.split("/")
    if len(parts) == 1:
        return Action(parts[0])
    if "U" in parts:
        return Action.UID
    if "D" in parts:
        return Action.DUMMY
    return Action.ZERO


@dataclass(frozen=True)
class ResolvedTable:
    """Concrete action per tag for one set of enabled options."""

    by_tag: dict[int, Action]
    curves: Action  # (50xx,xxxx)
    overlay_data: Action  # (60xx,3000)
    overlay_comments: Action  # (60xx,4000)
    private: Action
    release: str
    # Tags whose zero-length action stands for X/Z ("remove, or empty where Type 2"): the
    # engine removes such a sequence unless it is Type 2 where it sits (see engine).
    remove_or_zero: frozenset[int] = frozenset()

    def lookup(self, tag: int) -> Action | None:
        action = self.by_tag.get(tag)
        if action is not None:
            return action
        group = tag >> 16
        if 0x5000 <= group <= 0x501E and not group & 1:
            return self.curves
        if 0x6000 <= group <= 0x601E and not group & 1:
            element = tag & 0xFFFF
            if element == 0x3000:
                return self.overlay_data
            if element == 0x4000:
                return self.overlay_comments
        return None


def _resolve_row(row: TableRow, enabled: frozenset[Option]) -> Action:
    """Apply the enabled options to a row; the most protective option action wins (C over K)."""
    chosen = [row.options[o.value] for o in enabled if o.value in row.options]
    if "C" in chosen:
        return Action.CLEAN
    if "K" in chosen:
        return Action.KEEP
    return _concrete(row.basic)


@lru_cache(maxsize=1)
def _rows() -> tuple[str, tuple[TableRow, ...]]:
    data = json.loads(resources.files("imaging.deid").joinpath("data/table_e1_1.json").read_text())
    rows = tuple(TableRow(r["tag"], r["name"], r["basic"], r["options"]) for r in data["rows"])
    return data["release"], rows


def load_table(options: Iterable[Option] = ()) -> ResolvedTable:
    """The standard's table resolved for the given options."""
    release, rows = _rows()
    enabled = frozenset(options)
    by_tag: dict[int, Action] = {}
    special: dict[str, Action] = {}
    remove_or_zero: set[int] = set()
    for row in rows:
        action = _resolve_row(row, enabled)
        if all(c in "0123456789abcdef" for c in row.tag):
            tag = int(row.tag, 16)
            if action is Action.ZERO and set(row.basic.split("/")) == {"X", "Z"}:
                remove_or_zero.add(tag)
            if tag in _PSEUDONYMISED:
                action = Action.PSEUDONYM
            elif tag in _EMPTY_NOT_REMOVE and action is Action.REMOVE:
                action = Action.ZERO
            by_tag[tag] = action
        else:
            special[row.tag] = action
    return ResolvedTable(
        by_tag=by_tag,
        curves=special["50xxxxxx"],
        overlay_data=special["60xx3000"],
        overlay_comments=special["60xx4000"],
        private=special["private"],
        release=release,
        remove_or_zero=frozenset(remove_or_zero),
    )
