"""The de-identification engine: Table E.1-1 applied to every element at every depth.

Elements the profile keeps are never decoded: pydicom's raw elements are written back as
they were read, which is why the engine runs close to raw read + write speed.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID_dictionary

from governance.keys import ProjectKey
from imaging.deid.burned_in import PhiClassifier, PixelScreener, ScreenResult
from imaging.deid.errors import QuarantineError, QuarantineReason
from imaging.deid.pixels import apply_pixel_cleaning, matching_rule, store_pixels
from imaging.deid.profile import BurnedInMode, DeidProfile, PixelCleaningRule, UnlistedText, UnlistedUnknown
from imaging.deid.pseudonym import Pseudonymizer, PseudonymKind
from imaging.deid.scrub import TextScrubber
from imaging.deid.table import (
    BASIC_PROFILE_CODE,
    CLEAN_PIXEL_DATA_CODE,
    Action,
    Option,
    load_table,
)
from imaging.deid.values import (
    DUMMY,
    RAW_CODECS,
    TEXT_DUMMY,
    age_band_of,
    date_variants,
    raw_text,
    shift_value,
    text_of,
)

__all__ = ["DeidRecord", "Deidentifier"]

SOFTWARE = "RadGate 0.1.0"
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
_MULTI_TEXT_VRS = frozenset({"LO", "SH", "UC"})  # the text VRs whose values split on backslashes
_NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "IS", "DS", "AT"})
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
_MAX_LEN = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240, "AE": 16, "CS": 16, "PN": 64}
# File meta attributes that name the sending system or carry private data.
_META_REMOVE = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)
# Header values whose words must not survive in any cleaned free text.
_IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "IssuerOfPatientID",
    "AccessionNumber",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "OperatorsName",
    "RequestingPhysician",
    "ScheduledPerformingPhysicianName",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "StudyID",
    "RequestedProcedureID",
    "PatientInsurancePlanCodeSequence",
    "MilitaryRank",
    "BranchOfService",
    "MedicalRecordLocator",
    "RegionOfResidence",
    "CountryOfResidence",
    "PersonName",
    "VerifyingObserverName",
    "ContentCreatorName",
    "DeviceSerialNumber",
)
# Every generic PHI pattern of the scrubber needs a digit, an @ or a title word: text without
# any of them (and without a known token) cannot change, so it is left undecoded.
_SUSPECT = re.compile(r"[0-9@]|(?<![a-z])(?:dr|doctor|prof|mr|mrs|ms|miss)(?![a-z])")
# Code Sequence Macro (PS3.3 Table 8.8-1) values come from a coding scheme: scrubbed of the
# header's identifiers only, since the generic digit patterns would wipe codes such as 121322.
_CODE_TAGS = frozenset(
    int(tag_for_keyword(k) or 0)
    for k in (
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "LongCodeValue",
        "URNCodeValue",
        "MappingResource",
        "ContextIdentifier",
        "ContextGroupVersion",
    )
)
_IDENTIFYING_TAGS = frozenset(int(tag_for_keyword(k) or 0) for k in _IDENTIFYING_KEYWORDS)
_DATE_TAGS = tuple(
    int(tag_for_keyword(k) or 0)
    for k in (
        "PatientBirthDate",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "InstanceCreationDate",
    )
)
_CHARSET = 0x00080005
# X/Z sequences and the parent sequences in which they are Type 2 (None: the top level).
# Elsewhere they are Type 3, and an empty Type 3 sequence is invalid (1-n items): removed.
# Acquisition Context Sequence: Type 2 in the Acquisition Context Module. Referenced Study
# Sequence: Type 3 in General Study and the Request Attributes Macro, Type 2 inside the
# SR Document General Module's Referenced Request Sequence (0040,A370).
_TYPE2_SEQUENCE_PARENTS: dict[int, frozenset[int | None]] = {
    0x00400555: frozenset({None}),
    0x00081110: frozenset({0x0040A370}),
}
_ACTION_NAMES = {action: action.value for action in Action}  # Enum.value is a property: slow per element
# Header attributes the engine reads (tags, not keywords: no keyword lookups per instance).
_SOP_CLASS, _SOP_INSTANCE, _STUDY_UID, _SERIES_UID = 0x00080016, 0x00080018, 0x0020000D, 0x0020000E
_MODALITY, _BURNED_IN, _PATIENT_ID, _PATIENT_NAME = 0x00080060, 0x00280301, 0x00100020, 0x00100010
_ACCESSION, _PATIENT_SEX, _PATIENT_AGE, _PATIENT_BIRTH_DATE = 0x00080050, 0x00100040, 0x00101010, 0x00100030
_STUDY_DATE, _MANUFACTURER, _MODEL, _INSTITUTION = 0x00080020, 0x00080070, 0x00081090, 0x00080080
_BODY_PART, _PHOTOMETRIC = 0x00180015, 0x00280004
_PIXEL_DATA = 0x7FE00010


@dataclass
class DeidRecord:
    """What de-identifying one instance did: identifiers out, originals to seal, counts."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_pseudonym: str
    modality: str
    attributes: dict[str, Any]
    originals: list[tuple[str, str, str]]  # (kind, original, pseudonym): sealed by the caller
    actions: Counter[str] = field(default_factory=Counter)
    pixel_cleaned: bool = False
    # burned-in text screening: engine, versions, frames screened, boxes redacted (never text)
    pixel_screen: dict[str, Any] | None = None


@dataclass
class _Instance:
    """Per-instance state while walking."""

    offset_days: int
    scrubber_values: list[str]
    actions: Counter[str]
    # Python codec of the top-level character set when values can be read from their raw
    # bytes without pydicom (see ``values.RAW_CODECS``); None: every value goes through pydicom.
    codec: str | None = "latin-1"
    root: Dataset | None = None
    # Free text is cleaned after the walk, once every nested name and ID has been seen.
    pending: list[tuple[Dataset, Any]] = field(default_factory=list)
    # Tags of the sequences enclosing the dataset being walked, innermost last.
    parents: list[int] = field(default_factory=list)
    _scrubber: TextScrubber | None = None

    @property
    def scrubber(self) -> TextScrubber:
        if self._scrubber is None:
            self._scrubber = TextScrubber.from_values(self.scrubber_values)
        return self._scrubber


class Deidentifier:
    """Applies one profile under one project key; reusable across instances and threads."""

    def __init__(self, profile: DeidProfile, key: ProjectKey) -> None:
        self.profile = profile
        self.key_id = key.key_id
        self.table = load_table(profile.options)
        self.pseudonyms = Pseudonymizer(key)
        options = set(profile.options)
        self._full_dates = Option.RETAIN_LONGITUDINAL_FULL_DATES in options
        self._modified_dates = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options
        self._retain_uids = Option.RETAIN_UIDS in options
        self._safe_private = {(s.group, s.creator.strip().upper(), s.element) for s in profile.safe_private}
        self._safe_groups = {(s.group, s.creator.strip().upper()) for s in profile.safe_private}
        self._vr_cache: dict[int, str | None] = {}
        self._codes_cache: dict[bool, list[Dataset]] = {}
        self._method = f"{SOFTWARE}; PS3.15 E.1-1 {self.table.release}; {profile.label}"[:64]
        self.screener = (
            PixelScreener(profile.burned_in) if profile.burned_in.mode is BurnedInMode.SCREEN else None
        )

    # -- public -------------------------------------------------------------------------------

    def deidentify(self, ds: Dataset) -> DeidRecord:
        """De-identify ``ds`` in place; raises :class:`QuarantineError` when it is not safe to."""
        # the character set first: it says whether values may be read from their raw bytes
        state = _Instance(offset_days=0, scrubber_values=[], actions=Counter(), root=ds)
        state.codec = RAW_CODECS.get(self._text(ds, _CHARSET, state).strip().upper())
        text = self._text
        sop_class = text(ds, _SOP_CLASS, state) or text_of(
            ds.file_meta.get("MediaStorageSOPClassUID", "") if hasattr(ds, "file_meta") else ""
        )
        modality = text(ds, _MODALITY, state).upper()
        pixel_rule = self._burned_in_gate(ds, sop_class, modality, state)

        patient_id = text(ds, _PATIENT_ID, state)
        study_uid = text(ds, _STUDY_UID, state)
        pseudonym = self.pseudonyms.patient(patient_id, fallback=study_uid)
        values = state.scrubber_values
        values.extend(text(ds, tag, state) for tag in ds._dict if int(tag) in _IDENTIFYING_TAGS)
        identifiers = list(values)
        dates = [text(ds, tag, state) for tag in _DATE_TAGS]
        for date in dates:
            values.extend(date_variants(date))
        state.offset_days = self.pseudonyms.date_offset_days(pseudonym)
        originals = self._originals(ds, patient_id, pseudonym, state)
        attributes = self._attributes(ds, modality, state)

        pixel_cleaned = False
        if pixel_rule is not None:
            apply_pixel_cleaning(ds, pixel_rule, self.profile.burned_in.max_decoded_bytes)
            pixel_cleaned = True
        screen = self._screen(ds, identifiers, dates)
        if screen is not None and screen.pixels is not None:
            store_pixels(ds, screen.pixels)
            screen.pixels = None
            pixel_cleaned = True

        self._walk(ds, state, pseudonym, depth=0)
        self._scrub_pending(state)
        self._mark(ds, pixel_cleaned, verified=screen is not None and screen.verified)
        self._fix_meta(ds)
        new = {k: u for k, _, u in originals if k.endswith("_uid")}
        return DeidRecord(
            sop_class_uid=sop_class,
            sop_instance_uid=new.get(PseudonymKind.SOP_UID, ""),
            series_instance_uid=new.get(PseudonymKind.SERIES_UID, ""),
            study_instance_uid=new.get(PseudonymKind.STUDY_UID, ""),
            patient_pseudonym=pseudonym,
            modality=modality,
            attributes=attributes,
            originals=originals,
            actions=state.actions,
            pixel_cleaned=pixel_cleaned,
            pixel_screen=screen.lineage() if screen is not None else None,
        )

    # -- before the walk ----------------------------------------------------------------------

    def _burned_in_gate(
        self, ds: Dataset, sop_class: str, modality: str, state: _Instance
    ) -> PixelCleaningRule | None:
        """The device rule to apply first, or a quarantine. Screening mode lets every image
        through to OCR (the header flag is a hint, never proof); documents stay quarantined."""
        policy = self.profile.burned_in
        if sop_class.startswith("1.2.840.10008.5.1.4.1.1.104"):
            raise QuarantineError(
                QuarantineReason.ENCAPSULATED_DOCUMENT, f"SOP class {sop_class} is a document of free text"
            )
        rule = matching_rule(ds, policy.pixel_cleaning)
        if rule is not None or policy.mode is BurnedInMode.SCREEN:
            return rule
        if self._text(ds, _BURNED_IN, state).upper() == "YES":
            raise QuarantineError(QuarantineReason.BURNED_IN_ANNOTATION, "BurnedInAnnotation is YES")
        if sop_class in policy.quarantine_sop_classes:
            reason = (
                QuarantineReason.ENCAPSULATED_DOCUMENT
                if sop_class.startswith("1.2.840.10008.5.1.4.1.1.104")
                else QuarantineReason.BURNED_IN_RISK
            )
            raise QuarantineError(reason, f"SOP class {sop_class} may carry identifying pixels or text")
        if modality in policy.quarantine_modalities and "PixelData" in ds:
            raise QuarantineError(
                QuarantineReason.BURNED_IN_RISK, f"modality {modality} commonly has burned-in text"
            )
        return None

    def _screen(self, ds: Dataset, identifiers: list[str], dates: list[str]) -> ScreenResult | None:
        """OCR screening of the pixels against this instance's own identifiers (None: no pixels
        or the strict mode). Raises :class:`QuarantineError` (pixel_*) when unsafe."""
        if self.screener is None or _PIXEL_DATA not in ds._dict:
            return None
        return self.screener.screen(ds, PhiClassifier.from_header(identifiers, dates))

    def _originals(
        self, ds: Dataset, patient_id: str, pseudonym: str, state: _Instance
    ) -> list[tuple[str, str, str]]:
        out = [(PseudonymKind.PATIENT_ID, patient_id, pseudonym)]
        name = self._text(ds, _PATIENT_NAME, state)
        if name:
            out.append((PseudonymKind.PATIENT_NAME, name, pseudonym))
        uid = self._uid
        for kind, tag in (
            (PseudonymKind.STUDY_UID, _STUDY_UID),
            (PseudonymKind.SERIES_UID, _SERIES_UID),
            (PseudonymKind.SOP_UID, _SOP_INSTANCE),
        ):
            original = self._text(ds, tag, state)
            out.append((kind, original, uid(original) if original else ""))
        accession = self._text(ds, _ACCESSION, state)
        study_uid = self._text(ds, _STUDY_UID, state)
        if accession and study_uid:
            # Labels exported by accession number map to the de-identified study.
            out.append((PseudonymKind.ACCESSION, accession, uid(study_uid)))
        return out

    def _attributes(self, ds: Dataset, modality: str, state: _Instance) -> dict[str, Any]:
        """Non-identifying attributes for datasets and subgroup analysis."""
        text = self._text
        sex = text(ds, _PATIENT_SEX, state).upper()
        age = age_band_of(
            text(ds, _PATIENT_AGE, state), text(ds, _PATIENT_BIRTH_DATE, state), text(ds, _STUDY_DATE, state)
        )
        return {
            "modality": modality,
            "sex": sex if sex in {"M", "F", "O"} else "unknown",
            "age_band": age,
            "manufacturer": text(ds, _MANUFACTURER, state) or "unknown",
            "manufacturer_model": text(ds, _MODEL, state) or "unknown",
            "site": self.pseudonyms.site(text(ds, _INSTITUTION, state)),
            "body_part": text(ds, _BODY_PART, state).upper() or "unknown",
            "rows": int(ds.get("Rows", 0) or 0),
            "columns": int(ds.get("Columns", 0) or 0),
            "photometric": text(ds, _PHOTOMETRIC, state),
            "bits_stored": int(ds.get("BitsStored", 0) or 0),
        }

    # -- the walk -----------------------------------------------------------------------------

    def _walk(self, ds: Dataset, state: _Instance, pseudonym: str, depth: int) -> None:
        # ``tag`` is the dataset's own key object: passing it back makes every dict lookup an
        # identity hit, where a fresh int would go through pydicom's Python-level Tag equality.
        purge_groups: set[int] = set()
        for tag in list(ds.keys()):
            t = int(tag)
            group = t >> 16
            if group & 1:
                self._private(ds, tag, state)
                continue
            if t & 0xFFFF == 0 and group != 0x0002:
                del ds[tag]  # group lengths are retired and become wrong once values change
                continue
            if depth and (t in _IDENTIFYING_TAGS or self._vr(ds, tag) == "PN"):
                # names and IDs inside sequences (observers, SR content, beams) must not
                # survive in any free text either
                value = self._text(ds, tag, state)
                if value:
                    state.scrubber_values.append(value)
            action = self.table.lookup(t)
            if action is None:
                self._unlisted(ds, tag, state, pseudonym, depth)
                continue
            if (
                action is Action.ZERO
                and t in self.table.remove_or_zero
                and self._vr(ds, tag) == "SQ"
                and not self._type2_here(t, state)
            ):
                action = Action.REMOVE  # X/Z: an empty sequence is only valid where Type 2
            state.actions[_ACTION_NAMES[action]] += 1
            if action is Action.REMOVE:
                del ds[tag]
                if 0x6000 <= group <= 0x601E and t & 0xFFFF == 0x3000:
                    purge_groups.add(group)  # an overlay without its data is invalid
            elif action is Action.KEEP:
                if self._vr(ds, tag) == "SQ":
                    self._recurse(ds, tag, state, pseudonym, depth)
            else:
                self._apply(ds, tag, action, state, pseudonym, depth)
                if 0x6000 <= group <= 0x601E and t & 0xFFFF == 0x3000 and tag not in ds:
                    purge_groups.add(group)
        if purge_groups:
            for tag in [k for k in ds.keys() if (int(k) >> 16) in purge_groups]:
                del ds[tag]

    def _recurse(self, ds: Dataset, t: int, state: _Instance, pseudonym: str, depth: int) -> None:
        state.parents.append(int(t))
        try:
            for item in ds[t].value or ():
                self._walk(item, state, pseudonym, depth + 1)
        finally:
            state.parents.pop()

    def _type2_here(self, t: int, state: _Instance) -> bool:
        """Whether sequence ``t`` is Type 2 where it sits (kept empty rather than removed)."""
        parents = _TYPE2_SEQUENCE_PARENTS.get(t)
        if parents is None:
            return False
        return (state.parents[-1] if state.parents else None) in parents

    def _vr(self, ds: Dataset, tag: int) -> str | None:
        elem = ds._dict[tag]  # type: ignore[index]  # the walk passes the dataset's own key
        if isinstance(elem, RawDataElement) and elem.value is None and elem.length == 0:
            elem = ds.get_item(tag)  # an empty raw value is decoded first, as get_item does
        # a deferred value (bulk, left unread by the parser) is not read for its VR
        vr = elem.VR
        if vr and vr != "UN":
            return str(vr)
        t = int(tag)
        if t not in self._vr_cache:
            try:
                self._vr_cache[t] = dictionary_VR(t).split(" ")[0]
            except KeyError:
                self._vr_cache[t] = None
        return self._vr_cache[t] if vr != "UN" or self._vr_cache[t] else "UN"

    @staticmethod
    def _codec(ds: Dataset, state: _Instance) -> str | None:
        """The codec of ``ds``'s values: the top level's, unless an item sets its own charset."""
        return state.codec if ds is state.root or _CHARSET not in ds._dict else None

    def _text(self, ds: Dataset, tag: int, state: _Instance) -> str:
        """``text_of`` the element's value ('' when absent), read from its raw bytes when
        :func:`raw_text` gives what pydicom would decode (a value read so stays undecoded)."""
        elem = ds._dict.get(tag)  # type: ignore[call-overload]
        if elem is None:
            return ""
        if type(elem) is RawDataElement and elem.value is not None and not (tag >> 16) & 1:
            codec = self._codec(ds, state) if tag != _CHARSET else "latin-1"
            vr = self._vr(ds, tag)
            if codec is not None and vr is not None and elem.VR in (vr, None):
                text = raw_text(elem.value, vr, codec)
                if text is not None:
                    return text
        return text_of(ds[tag].value)

    def _raw_text(self, ds: Dataset, tag: int, state: _Instance) -> str | None:
        """The undecoded value as text when that is safe to inspect, else None.

        Decoded with the codec pydicom uses for the character set: a value read in another
        codec (ISO 8859-1 bytes as UTF-8) would hide the header's names from the check.
        """
        raw = ds.get_item(tag)
        codec = self._codec(ds, state)
        if codec is None or not isinstance(raw, RawDataElement) or raw.value is None:
            return None
        return raw.value.decode(codec, "replace")

    def _text_unchanged(self, ds: Dataset, tag: int, state: _Instance) -> bool:
        """True when scrubbing could not change this text (checked on the raw bytes)."""
        text = self._raw_text(ds, tag, state)
        if text is None:
            return False
        lowered = text.lower()
        if tag not in _CODE_TAGS and _SUSPECT.search(lowered):
            return False
        return not state.scrubber.mentions(lowered)

    def _registered_uids_only(self, ds: Dataset, tag: int, state: _Instance) -> bool:
        text = self._raw_text(ds, tag, state)
        if text is None:
            return False
        values = [v.strip(" \x00") for v in text.split("\\")]
        return all(v in UID_dictionary or not v for v in values)

    def _set(self, ds: Dataset, tag: int, vr: str, value: Any) -> None:
        """Replace an element without decoding the old value."""
        ds[tag] = DataElement(tag, vr, value)

    def _apply(
        self, ds: Dataset, t: int, action: Action, state: _Instance, pseudonym: str, depth: int
    ) -> None:
        raw_vr = self._vr(ds, t)
        if raw_vr not in (None, "UN", "SQ") and self._apply_undecoded(
            ds, t, str(raw_vr), action, state, pseudonym
        ):
            return
        elem = ds[t]
        vr = elem.VR
        if vr == "SQ":
            if action is Action.ZERO:
                elem.value = Sequence()
            else:  # D, U, C: keep the structure (a dummy of the same shape), apply the table inside
                self._recurse(ds, t, state, pseudonym, depth)
            return
        if action is Action.PSEUDONYM:
            elem.value = pseudonym
        elif action is Action.ZERO:
            elem.value = b"" if vr in _BINARY_VRS else None if vr in _NUMERIC_VRS else ""
        elif action is Action.DUMMY:
            elem.value = self._dummy(elem)
        elif action is Action.UID:
            self._replace_uids(elem)
        elif action is Action.CLEAN:
            self._clean(ds, elem, state)

    def _apply_undecoded(
        self, ds: Dataset, t: int, vr: str, action: Action, state: _Instance, pseudonym: str
    ) -> bool:
        """Apply ``action`` without pydicom decoding the old value (True when done): it is not
        needed (P, Z, most D, cleaned text and names) or is read from its raw bytes (UIDs, dates)."""
        if action is Action.PSEUDONYM:
            self._set(ds, t, vr, pseudonym)
            return True
        if action is Action.ZERO:
            self._set(ds, t, vr, b"" if vr in _BINARY_VRS else None if vr in _NUMERIC_VRS else "")
            return True
        if action is Action.DUMMY and vr != "UI":  # a dummy UID derives from the original value
            self._set(ds, t, vr, self._dummy_for(vr))
            return True
        if ds._dict[t].VR not in (vr, None):  # type: ignore[index]
            return False  # stored as UN: pydicom decides what it becomes, as before
        if action is Action.CLEAN:
            if vr in _TEXT_VRS:
                state.pending.append((ds, t))  # cleaned once the whole instance is read
                return True
            if vr == "PN":
                self._set(ds, t, vr, DUMMY["PN"])
                return True
            if vr == "TM" and (self._modified_dates or self._full_dates):
                return True  # kept: dates move by whole days
            if vr in ("DA", "DT", "TM") and not self._modified_dates:
                self._set(ds, t, vr, self._dummy_for(vr))
                return True
        if vr not in ("UI", "DA", "DT") or action not in (Action.UID, Action.CLEAN, Action.DUMMY):
            return False
        if type(ds._dict[t]) is not RawDataElement:  # type: ignore[index]
            return False
        text = self._text(ds, t, state)
        values = text.split("\\")
        if vr == "UI":
            if action is Action.DUMMY:  # as _dummy: one UID from the whole original value
                self._set(ds, t, vr, self._uid(text) if text else "")
            else:  # as _replace_uids
                self._set(ds, t, vr, [self._uid(v) for v in values] if len(values) > 1 else self._uid(text))
            return True
        if action is not Action.CLEAN:
            return False
        shifted = [shift_value(v, vr, state.offset_days) for v in values]  # as _shift
        self._set(ds, t, vr, shifted if len(shifted) > 1 else shifted[0])
        return True

    def _dummy(self, elem: DataElement) -> Any:
        if elem.VR == "UI":
            return self._uid(text_of(elem.value)) if elem.value else ""
        return self._dummy_for(elem.VR)

    @staticmethod
    def _dummy_for(vr: str) -> Any:
        if vr in _TEXT_VRS:
            return TEXT_DUMMY
        if vr in _BINARY_VRS:
            return b""
        if vr in _NUMERIC_VRS and vr not in ("IS", "DS"):
            return 0
        return DUMMY.get(vr, "")

    def _uid(self, value: str) -> str:
        return value if self._retain_uids else self.pseudonyms.uid(value)

    def _replace_uids(self, elem: DataElement) -> None:
        if elem.VR != "UI" or elem.value is None:
            elem.value = self._dummy(elem)
        elif isinstance(elem.value, MultiValue | list):
            elem.value = [self._uid(str(v)) for v in elem.value]
        else:
            elem.value = self._uid(str(elem.value))

    def _clean(self, ds: Dataset, elem: DataElement, state: _Instance) -> None:
        vr = elem.VR
        if vr in ("DA", "DT"):
            elem.value = self._shift(elem, state) if self._modified_dates else self._dummy(elem)
        elif vr == "TM":
            # Dates move by whole days, so time of day stays (it identifies nobody alone).
            if not (self._modified_dates or self._full_dates):
                elem.value = self._dummy(elem)
        elif vr in _TEXT_VRS or vr == "PN":
            if vr == "PN":
                elem.value = DUMMY["PN"]
            else:
                state.pending.append((ds, elem.tag))
        elif vr == "AE":
            elem.value = "AE" + self.pseudonyms.lookup("ae", text_of(elem.value))[:14].upper()
        elif vr == "UI":
            self._replace_uids(elem)
        elif vr in _BINARY_VRS:
            del ds[elem.tag]  # pixel-like content cannot be cleaned in place: removed

    def _scrub_pending(self, state: _Instance) -> None:
        for ds, tag in state.pending:
            changed = tag in ds._dict and not self._text_unchanged(ds, tag, state)
            if changed and not self._scrub_raw(ds, tag, state):
                self._scrub(ds[tag], state)

    def _scrub_raw(self, ds: Dataset, tag: int, state: _Instance) -> bool:
        """:meth:`_scrub` on the text read from the raw bytes (True when done), so that pydicom
        does not decode a value that is replaced anyway; the new value is the same."""
        elem = ds._dict[tag]  # type: ignore[index]
        codec = self._codec(ds, state)
        vr = self._vr(ds, tag)
        if codec is None or vr not in _TEXT_VRS or type(elem) is not RawDataElement:
            return False
        if elem.VR not in (vr, None) or elem.value is None:
            return False
        text = raw_text(elem.value, vr, codec)
        if text is None:
            return False
        limit = _MAX_LEN.get(vr)
        generic = tag not in _CODE_TAGS
        clean = state.scrubber.clean
        if vr in _MULTI_TEXT_VRS and "\\" in text:  # pydicom's MultiValue
            cleaned = [clean(v, generic=generic) for v in text.split("\\")]
            self._set(ds, tag, vr, [c[:limit] if limit else c for c in cleaned])
        elif text:
            cleaned_text = clean(text, generic=generic)
            self._set(ds, tag, vr, cleaned_text[:limit] if limit else cleaned_text)
        else:
            self._set(ds, tag, vr, "")  # what pydicom decodes an empty or blank value to
        return True

    def _scrub(self, elem: DataElement, state: _Instance) -> None:
        if elem.value is None or elem.value == "":
            return
        limit = _MAX_LEN.get(elem.VR)
        generic = elem.tag not in _CODE_TAGS
        if isinstance(elem.value, MultiValue | list):
            cleaned = [state.scrubber.clean(str(v), generic=generic) for v in elem.value]
            elem.value = [c[:limit] if limit else c for c in cleaned]
        else:
            text = state.scrubber.clean(str(elem.value), generic=generic)
            elem.value = text[:limit] if limit else text

    def _shift(self, elem: DataElement, state: _Instance) -> Any:
        values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        shifted = [shift_value(text_of(v), elem.VR, state.offset_days) for v in values]
        return shifted if len(shifted) > 1 else shifted[0]

    def _unlisted(self, ds: Dataset, t: int, state: _Instance, pseudonym: str, depth: int) -> None:
        """Attributes the table does not list, as the profile's ``unlisted`` policy states."""
        vr = self._vr(ds, t)
        if vr is None or vr == "UN":
            if self.profile.unlisted.unknown is UnlistedUnknown.REMOVE:
                state.actions["unlisted_removed"] += 1
                del ds[t]
            return
        if vr == "SQ":
            self._recurse(ds, t, state, pseudonym, depth)
        elif vr in _TEXT_VRS:
            if self.profile.unlisted.text is UnlistedText.REMOVE:
                del ds[t]
            else:
                state.pending.append((ds, t))
            state.actions["unlisted_text"] += 1
        elif vr == "PN":
            ds[t].value = DUMMY["PN"]
            state.actions["unlisted_pn"] += 1
        elif vr == "UI":
            if not self._registered_uids_only(ds, t, state):
                self._replace_uids(ds[t])
        elif vr in ("DA", "DT", "TM") and not self._full_dates:
            self._clean(ds, ds[t], state)

    def _private(self, ds: Dataset, t: int, state: _Instance) -> None:
        group, element = t >> 16, t & 0xFFFF
        if self._safe_private and self.table.private is not Action.REMOVE and group > 0x0008:
            if 0x0010 <= element <= 0x00FF:
                creator = text_of(ds[t].value).strip().upper()
                if (group, creator) in self._safe_groups:
                    return
            elif element >= 0x1000:
                creator_tag = (group << 16) | (element >> 8)
                creator = text_of(ds[creator_tag].value).strip().upper() if creator_tag in ds else ""
                if (group, creator, element & 0xFF) in self._safe_private:
                    state.actions["private_kept"] += 1
                    return
        state.actions["private_removed"] += 1
        del ds[t]

    # -- after the walk -----------------------------------------------------------------------

    def _mark(self, ds: Dataset, pixel_cleaned: bool, *, verified: bool = False) -> None:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self._method
        if verified or (pixel_cleaned and self.screener is None):
            ds.BurnedInAnnotation = "NO"
        ds[0x00120064] = DataElement(0x00120064, "SQ", self._method_codes(pixel_cleaned))
        if self._full_dates:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif self._modified_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"
        age = text_of(ds.get("PatientAge", ""))
        cap = self.profile.cap_age_years
        if cap and len(age) == 4 and age.endswith("Y") and age[:3].isdigit() and int(age[:3]) >= cap:
            ds.PatientAge = f"{cap:03d}Y"

    def _method_codes(self, pixel_cleaned: bool) -> Sequence:
        """CID 7050 codes of what was applied (built once per engine; the items are never edited)."""
        cached = self._codes_cache.get(pixel_cleaned)
        if cached is None:
            codes = [BASIC_PROFILE_CODE, *([CLEAN_PIXEL_DATA_CODE] if pixel_cleaned else [])]
            codes.extend(option.code for option in self.profile.options)
            items = []
            for value, meaning in codes:
                item = Dataset()
                item.CodeValue = value
                item.CodingSchemeDesignator = "DCM"
                item.CodeMeaning = meaning
                items.append(item)
            cached = self._codes_cache[pixel_cleaned] = items
        return Sequence(cached)

    def _fix_meta(self, ds: Dataset) -> None:
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            return
        for tag in _META_REMOVE:
            if tag in meta._dict:
                del meta[tag]
        # New elements rather than attribute assignment: the old values are never decoded.
        if _SOP_INSTANCE in ds._dict:
            meta[0x00020003] = DataElement(0x00020003, "UI", ds[_SOP_INSTANCE].value)
        elif 0x00020003 in meta._dict:
            meta[0x00020003] = DataElement(0x00020003, "UI", self._uid(str(meta[0x00020003].value)))
        if _SOP_CLASS in ds._dict:
            meta[0x00020002] = DataElement(0x00020002, "UI", ds[_SOP_CLASS].value)
        # The file is now written by RadGate (on pydicom): the writer's identity, not the source's.
        meta[0x00020012] = DataElement(0x00020012, "UI", PYDICOM_IMPLEMENTATION_UID)
        meta[0x00020013] = DataElement(0x00020013, "SH", "RADGATE_010")
