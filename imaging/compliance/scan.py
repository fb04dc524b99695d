"""Re-scan stored objects: is every one still de-identified?

Per instance, independently of the de-identifier's code path:

* the object is in the store and matches its content hash;
* the de-identification markers are there (PatientIdentityRemoved YES, the Basic Profile code
  in DeidentificationMethodCodeSequence) and PatientID is the catalog's pseudonym;
* no private attribute outside the profile's safe list;
* no UID that is neither registered (SOP classes, transfer syntaxes) nor keyed (``2.25.``);
* none of the patient's and the study's originals, unsealed from the map, occurs anywhere in
  the bytes (``imaging.phi_corpus.residual_phi``, the independent scanner).

Findings name instances by the first 12 hex digits of their hash and never carry values.
"""

from __future__ import annotations

import random
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from governance.catalog import Instance, Pseudonym
from governance.keys import KeyError_, ProjectKey
from imaging.deid.pseudonym import PseudonymKind
from imaging.deid.table import BASIC_PROFILE_CODE
from imaging.phi_corpus import residual_phi
from imaging.store import ContentStore, StoreError

__all__ = ["InstanceFinding", "ScanResult", "scan_store"]

_KEYED_UID_ROOT = "2.25."


@dataclass(frozen=True)
class InstanceFinding:
    sha256: str  # first 12 hex digits
    problem: str  # missing-object | hash-mismatch | unparseable | no-marker | pseudonym-mismatch |
    # uid-mismatch | private-attribute | foreign-uid | residual-phi | unsealable-original
    count: int = 1


@dataclass
class ScanResult:
    total: int
    scanned: int
    findings: list[InstanceFinding] = field(default_factory=list)

    @property
    def failing_instances(self) -> int:
        return len({f.sha256 for f in self.findings})

    def problems(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for f in self.findings:
            counts[f.problem] += 1
        return dict(counts)


def _safe_private(
    profile_label: str, cache: dict[str, set[tuple[int, str, int]]]
) -> set[tuple[int, str, int]]:
    if profile_label not in cache:
        from imaging.deid import ProfileError, load_profile

        try:
            profile = load_profile(profile_label.split("@")[0])
            cache[profile_label] = {
                (s.group, s.creator.strip().upper(), s.element) for s in profile.safe_private
            }
        except ProfileError:
            cache[profile_label] = set()
    return cache[profile_label]


def _walk(ds: Dataset, safe: set[tuple[int, str, int]], out: dict[str, int]) -> None:
    for elem in ds:
        tag = int(elem.tag)
        group, element = tag >> 16, tag & 0xFFFF
        if group & 1 and group > 0x0008:
            if 0x0010 <= element <= 0x00FF:
                creator = str(elem.value or "").strip().upper()
                if not any(g == group and c == creator for g, c, _ in safe):
                    out["private-attribute"] += 1
            else:
                creator_tag = (group << 16) | (element >> 8)
                creator = str(ds[creator_tag].value or "").strip().upper() if creator_tag in ds else ""
                if (group, creator, element & 0xFF) not in safe:
                    out["private-attribute"] += 1
        if elem.VR == "SQ":
            for item in elem.value or ():
                _walk(item, safe, out)
        elif elem.VR == "UI" and elem.value:
            values = elem.value if isinstance(elem.value, list | tuple) else str(elem.value).split("\\")
            for uid in values:
                uid = str(uid).strip().rstrip("\x00")
                if uid and uid not in UID_dictionary and not uid.startswith(_KEYED_UID_ROOT):
                    out["foreign-uid"] += 1


def _originals(
    session: Session, key: ProjectKey, instances: Sequence[Instance]
) -> tuple[dict[str, list[str]], int]:
    """Instance sha256 -> its patient's and study's originals (unsealed), and how many failed."""
    keys = {i.patient_pseudonym for i in instances} | {i.study_instance_uid for i in instances}
    keys |= {i.series_instance_uid for i in instances} | {i.sop_instance_uid for i in instances}
    by_pseudonym: dict[str, list[str]] = defaultdict(list)
    failed = 0
    values = sorted(keys)
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        for row in session.scalars(select(Pseudonym).where(Pseudonym.pseudonym.in_(chunk))):
            try:
                original = key.unseal(row.sealed_original, row.lookup.encode()).decode("utf-8", "replace")
            except KeyError_:
                failed += 1
                continue
            tokens = [original.strip()]
            if row.kind == PseudonymKind.PATIENT_NAME:
                tokens = [p.strip() for p in original.replace("=", "^").split("^") if len(p.strip()) >= 4]
            by_pseudonym[row.pseudonym].extend(t for t in tokens if len(t) >= 4)
    out = {}
    for inst in instances:
        values_for: set[str] = set()
        for pseudo in (
            inst.patient_pseudonym,
            inst.study_instance_uid,
            inst.series_instance_uid,
            inst.sop_instance_uid,
        ):
            values_for.update(by_pseudonym.get(pseudo, ()))
        out[inst.sha256] = sorted(values_for)
    return out, failed


def _check_one(
    inst: Instance, data: bytes, originals: Iterable[str], safe: set[tuple[int, str, int]]
) -> dict[str, int]:
    problems: dict[str, int] = defaultdict(int)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(BytesIO(data), stop_before_pixels=True)
    except Exception:  # pydicom raises many types on malformed input; any means unparseable
        problems["unparseable"] += 1
        return problems
    codes = {
        str(item.get("CodeValue", "")) for item in ds.get("DeidentificationMethodCodeSequence", []) or []
    }
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES" or BASIC_PROFILE_CODE[0] not in codes:
        problems["no-marker"] += 1
    if str(ds.get("PatientID", "")).strip() != inst.patient_pseudonym:
        problems["pseudonym-mismatch"] += 1
    for keyword, expected in (
        ("StudyInstanceUID", inst.study_instance_uid),
        ("SOPInstanceUID", inst.sop_instance_uid),
    ):
        if str(ds.get(keyword, "")).strip() != expected:
            problems["uid-mismatch"] += 1
    _walk(ds, safe, problems)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        media = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        if media and media not in UID_dictionary and not media.startswith(_KEYED_UID_ROOT):
            problems["foreign-uid"] += 1
    leaked = residual_phi(data, originals)
    if leaked:
        problems["residual-phi"] += len(leaked)
    return problems


def scan_store(
    session: Session,
    store: ContentStore,
    key: ProjectKey,
    *,
    sample: int | None = None,
    seed: int | None = None,
    batch: int = 200,
) -> ScanResult:
    """Re-scan ``sample`` random instances (``None`` or 0: all) of the catalog."""
    total = int(session.scalar(select(func.count()).select_from(Instance)) or 0)
    ids = list(session.scalars(select(Instance.id).order_by(Instance.id)))
    if sample and sample < len(ids):
        ids = sorted(random.Random(seed).sample(ids, sample))
    result = ScanResult(total=total, scanned=0)
    cache: dict[str, set[tuple[int, str, int]]] = {}
    for start in range(0, len(ids), batch):
        instances = list(session.scalars(select(Instance).where(Instance.id.in_(ids[start : start + batch]))))
        originals, failed = _originals(session, key, instances)
        if failed:
            result.findings.append(InstanceFinding("map", "unsealable-original", failed))
        for inst in instances:
            result.scanned += 1
            try:
                data = store.get(inst.store_key)
            except StoreError as exc:
                problem = "hash-mismatch" if "does not match" in str(exc) else "missing-object"
                result.findings.append(InstanceFinding(inst.sha256[:12], problem))
                continue
            for problem, count in _check_one(
                inst, data, originals[inst.sha256], _safe_private(inst.profile, cache)
            ).items():
                result.findings.append(InstanceFinding(inst.sha256[:12], problem, count))
    return result
