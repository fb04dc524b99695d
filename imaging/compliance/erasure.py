"""Patient erasure (GDPR Art. 17): find everything derived from one patient and remove it.

``plan_erasure(patient_id, principal=broker)`` (honest broker; audited) finds, through the
keyed lookup of the sealed map and the lineage: stored objects, quarantined inputs, map
entries, lineage rows, rows of any other catalog table keyed by the patient's pseudonym (e.g.
feedback cases) or by the inputs' hashes, dataset versions holding the patient, and the MLflow
runs and model versions trained on those versions.

``erase_patient(patient_id, principal=broker, approver=admin, reason=...)`` carries it out:
objects and sealed quarantine files deleted, catalog rows and map entries deleted, affected
dataset versions superseded by successors without the patient, affected model versions and
runs tagged ``radgate.erasure.review=required`` for governance review. The audit chain is
only appended to: entries name an opaque erasure id and a keyed subject digest, never the
patient's identifiers. Re-running is harmless (everything is found by keyed derivation too).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import warnings
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, delete, inspect, or_, select
from sqlalchemy.orm import Session

from governance.audit import record
from governance.auth import Principal, Role, require_role
from governance.auth.roles import PermissionDenied
from governance.catalog import Instance, LineageEvent, Pseudonym, QuarantineRecord, open_catalog
from governance.keys import KeyError_, ProjectKey, load_project_key
from governance.settings import Settings, get_settings
from imaging.compliance.models import DatasetSupersession, ErasureRecord
from imaging.datasets import DatasetManifest, DatasetVersionRecord
from imaging.deid.pseudonym import Pseudonymizer, PseudonymKind
from imaging.store import ContentStore

__all__ = [
    "ERASURE_REVIEW_TAG",
    "ErasureError",
    "ErasurePlan",
    "erase_patient",
    "list_erasures",
    "plan_erasure",
    "superseded_by",
]

ERASURE_REVIEW_TAG = "radgate.erasure.review"
# gateway_pulled is kept on purpose: it stops a later pull from the PACS fetching the patient again.
_HANDLED = {
    "gateway_pulled",
    "instances",
    "quarantine",
    "lineage",
    "pseudonyms",
    "audit_log",
    "users",
    "dataset_versions",
    "dataset_supersessions",
    "erasures",
    "alembic_version",
}


#: Columns by which another domain's table names patient-derived rows: the pseudonym, the hash
#: of an original input, or the content hash of a stored (de-identified) instance.
_KEY_COLUMNS = ("patient_pseudonym", "input_sha256", "instance_sha256")


def _values(column: str, pseudonym: str, inputs: set[str], outputs: set[str]) -> list[str]:
    if column == "patient_pseudonym":
        return [pseudonym]
    return sorted(inputs if column == "input_sha256" else outputs)


class ErasureError(RuntimeError):
    """The erasure was refused or cannot be carried out (message carries no PHI)."""


@dataclass
class ErasurePlan:
    """What an erasure removes and flags (hashes, pseudonymous ids and counts only)."""

    subject: str  # keyed digest of the patient pseudonym: proves which erasure, reveals nothing
    pseudonym: str = field(repr=False)
    instances: list[tuple[str, str, str]] = field(default_factory=list)  # sha256, store key, input sha256
    quarantine: list[tuple[str, str]] = field(default_factory=list)  # input sha256, sealed path
    pending_inputs: list[str] = field(default_factory=list, repr=False)  # sealed served inputs (paths)
    map_entries: int = 0
    lineage_rows: int = 0
    other_rows: dict[str, int] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "instances": [sha[:12] for sha, _, _ in self.instances],
            "quarantined_inputs": [sha[:12] for sha, _ in self.quarantine],
            "pending_served_inputs": len(self.pending_inputs),
            "map_entries": self.map_entries,
            "lineage_rows": self.lineage_rows,
            "other_rows": self.other_rows,
            "dataset_versions": self.datasets,
            "model_versions": self.models,
            "runs": self.runs,
        }


def _subject(key: ProjectKey, pseudonym: str) -> str:
    return key.mac("erasure-subject", pseudonym.encode()).hex()[:32]


def _pseudonym(session: Session, key: ProjectKey, patient_id: str) -> str:
    pseudonymizer = Pseudonymizer(key)
    lookup = pseudonymizer.lookup(PseudonymKind.PATIENT_ID, patient_id)
    row = session.scalar(
        select(Pseudonym.pseudonym).where(
            Pseudonym.kind == PseudonymKind.PATIENT_ID, Pseudonym.lookup == lookup
        )
    )
    # Without a map entry (a re-run after a partial erasure) the keyed derivation still finds it.
    return row or pseudonymizer.patient(patient_id)


def _quarantined(session: Session, key: ProjectKey, patient_id: str) -> list[tuple[str, str]]:
    """Quarantined inputs whose sealed bytes carry this PatientID (unsealed in memory only)."""
    from pydicom import dcmread

    found = []
    for rec in session.scalars(select(QuarantineRecord)):
        path = Path(rec.path)
        if path.suffix != ".sealed" or not path.exists():
            continue
        try:
            data = key.unseal(path.read_bytes(), rec.input_sha256.encode())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(BytesIO(data), force=True, stop_before_pixels=True)
            if str(ds.get("PatientID", "")).strip() == patient_id.strip():
                found.append((rec.input_sha256, str(path)))
        except (KeyError_, OSError):
            continue
        except Exception:
            continue
    return found


def _patient_of(data: bytes) -> str:
    from pydicom import dcmread

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(BytesIO(data), force=True, stop_before_pixels=True)
    return str(ds.get("PatientID", "")).strip()


def _pending_inputs(session: Session, key: ProjectKey, patient_id: str, settings: Settings) -> list[str]:
    """Served requests' inputs that serving keeps sealed while feedback may come (its layout:
    ``monitoring/pending/<sha256 of the request id>.sealed``, the request id as associated data)."""
    bind = session.get_bind()
    if "monitoring_records" not in inspect(bind).get_table_names():
        return []
    records = Table("monitoring_records", MetaData(), autoload_with=bind)
    found = []
    folder = settings.home / "monitoring" / "pending"
    for (request_id,) in session.execute(
        select(records.c.request_id).where(records.c.input_expires_at.isnot(None))
    ):
        path = folder / f"{hashlib.sha256(str(request_id).encode()).hexdigest()}.sealed"
        if not path.exists():
            continue
        try:
            if _patient_of(key.unseal(path.read_bytes(), str(request_id).encode())) == patient_id.strip():
                found.append(str(path))
        except (KeyError_, OSError):
            continue
        except Exception:  # an input that does not parse cannot be attributed
            continue
    return found


def _other_tables(session: Session) -> list[tuple[Table, str]]:
    """Catalog tables owned by other domains that hold patient-derived rows (by convention: a
    ``patient_pseudonym``, ``input_sha256`` or ``instance_sha256`` column, e.g. feedback cases)."""
    bind = session.get_bind()
    names = inspect(bind).get_table_names()
    meta = MetaData()
    out = []
    for name in names:
        if name in _HANDLED:
            continue
        table = Table(name, meta, autoload_with=bind)
        for column in _KEY_COLUMNS:
            if column in table.c:
                out.append((table, column))
    return out


def _find(session: Session, key: ProjectKey, patient_id: str, settings: Settings) -> ErasurePlan:
    pseudonym = _pseudonym(session, key, patient_id)
    plan = ErasurePlan(subject=_subject(key, pseudonym), pseudonym=pseudonym)
    instances = list(session.scalars(select(Instance).where(Instance.patient_pseudonym == pseudonym)))
    plan.instances = [(i.sha256, i.store_key, i.input_sha256) for i in instances]
    plan.quarantine = _quarantined(session, key, patient_id)
    plan.pending_inputs = _pending_inputs(session, key, patient_id, settings)
    uids = {i.study_instance_uid for i in instances} | {i.series_instance_uid for i in instances}
    uids |= {i.sop_instance_uid for i in instances}
    plan.map_entries = len(list(session.scalars(select(Pseudonym.id).where(_map_filter(pseudonym, uids)))))
    inputs = {i.input_sha256 for i in instances} | {q for q, _ in plan.quarantine}
    outputs = {i.sha256 for i in instances}
    plan.lineage_rows = len(
        list(session.scalars(select(LineageEvent.id).where(_lineage_filter(inputs, outputs))))
    )
    for table, column in _other_tables(session):
        values = _values(column, pseudonym, inputs, outputs)
        count = len(session.execute(select(table).where(table.c[column].in_(values))).all()) if values else 0
        if count:
            plan.other_rows[f"{table.name}.{column}"] = count
    for rec in session.scalars(select(DatasetVersionRecord)):
        manifest = DatasetManifest.model_validate_json(rec.manifest_json)
        hit = sum(1 for item in manifest.items if item.patient == pseudonym)
        if hit:
            plan.datasets.append(
                {
                    "id": rec.id,
                    "name": rec.name,
                    "items": hit,
                    "superseded_by": superseded_by(rec.id, session=session),
                }
            )
    _models(plan, settings)
    return plan


def _map_filter(pseudonym: str, uids: set[str]) -> Any:
    conditions = [Pseudonym.pseudonym == pseudonym]
    if uids:
        conditions.append(Pseudonym.pseudonym.in_(sorted(uids)))
    return or_(*conditions)


def _lineage_filter(inputs: set[str], outputs: set[str]) -> Any:
    return or_(
        LineageEvent.input_sha256.in_(sorted(inputs) or [""]),
        LineageEvent.output_sha256.in_(sorted(outputs) or [""]),
    )


def _models(plan: ErasurePlan, settings: Settings) -> None:
    """Model versions and runs trained on an affected dataset version (MLflow tags)."""
    uri = settings.resolved_mlflow_uri
    if not plan.datasets or (
        uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()
    ):
        return
    from governance.approvals.registry import registry_client

    client = registry_client(uri)
    affected = {d["id"] for d in plan.datasets}
    token = None
    while True:
        page = client.search_model_versions(max_results=1000, page_token=token)
        for mv in page:
            dataset = (mv.tags or {}).get("radgate.dataset_version")
            if dataset in affected:
                plan.models.append({"name": mv.name, "version": str(mv.version), "dataset_version": dataset})
        token = page.token
        if not token:
            break
    experiments = [e.experiment_id for e in client.search_experiments()]
    for dataset in sorted(affected):
        runs = client.search_runs(experiments, filter_string=f"tags.`radgate.dataset_version` = '{dataset}'")
        plan.runs.extend(r.info.run_id for r in runs)
    plan.models.sort(key=lambda m: (m["name"], int(m["version"])))


def superseded_by(version_id: str, *, session: Session | None = None) -> str | None:
    """The successor of a superseded dataset version ("" when it has none), or None if current."""

    def lookup(s: Session) -> str | None:
        row = s.scalar(select(DatasetSupersession).where(DatasetSupersession.version_id == version_id))
        return None if row is None else (row.successor_id or "")

    if session is not None:
        return lookup(session)
    with open_catalog().session() as s:
        return lookup(s)


def _authorise(principal: Principal, action: str, role: Role, target: str) -> None:
    try:
        require_role(principal, role)
    except PermissionDenied as exc:
        record(principal.name, f"{action}.denied", target, {"needs": role.value}, role=principal.role.value)
        raise ErasureError(str(exc)) from exc


def plan_erasure(patient_id: str, *, principal: Principal, settings: Settings | None = None) -> ErasurePlan:
    """What erasing ``patient_id`` (the original PatientID) would do; honest broker; audited."""
    settings = settings or get_settings()
    _authorise(principal, "erasure.plan", Role.HONEST_BROKER, "erasure:plan")
    if not patient_id.strip():
        raise ErasureError("a patient ID is required")
    key = load_project_key(settings, create=False)
    with open_catalog(settings).session() as session:
        plan = _find(session, key, patient_id, settings)
    record(
        principal.name,
        "erasure.plan",
        f"erasure-subject:{plan.subject}",
        {
            "instances": len(plan.instances),
            "quarantined": len(plan.quarantine),
            "dataset_versions": len(plan.datasets),
            "model_versions": len(plan.models),
        },
        role=principal.role.value,
    )
    return plan


def _delete_object(store: ContentStore, store_key: str) -> None:
    if "://" not in store.root or store.root.startswith("file://"):
        store.path(store_key).unlink(missing_ok=True)
        return
    import fsspec

    fs, base = fsspec.core.url_to_fs(store.root)
    path = f"{base}/{store_key[:2]}/{store_key[2:4]}/{store_key}.dcm"
    if fs.exists(path):
        fs.rm(path)


def _supersede(session: Session, plan: ErasurePlan, erasure_id: str) -> list[dict[str, Any]]:
    out = []
    for entry in plan.datasets:
        rec = session.get(DatasetVersionRecord, entry["id"])
        if rec is None or superseded_by(rec.id, session=session) is not None:
            continue
        manifest = DatasetManifest.model_validate_json(rec.manifest_json)
        remaining = [i for i in manifest.items if i.patient != plan.pseudonym]
        successor_id = None
        if remaining:
            successor = manifest.model_copy(update={"items": remaining})
            successor_id = successor.id
            if session.get(DatasetVersionRecord, successor_id) is None:
                summary = successor.summary()
                session.add(
                    DatasetVersionRecord(
                        id=successor_id,
                        name=rec.name,
                        instances=len(remaining),
                        patients=summary["patients"],
                        summary=summary,
                        manifest_json=successor.canonical_json(),
                    )
                )
        session.add(
            DatasetSupersession(
                version_id=rec.id, successor_id=successor_id, reason="erasure", erasure_id=erasure_id
            )
        )
        out.append(
            {"id": rec.id, "successor": successor_id, "removed_items": len(manifest.items) - len(remaining)}
        )
    return out


def _flag(plan: ErasurePlan, erasure_id: str, principal: Principal, settings: Settings) -> None:
    if not plan.models and not plan.runs:
        return
    from governance.approvals.registry import model_target, registry_client

    client = registry_client(settings.resolved_mlflow_uri)
    note = json.dumps({"erasure_id": erasure_id, "subject": plan.subject})
    for model in plan.models:
        client.set_model_version_tag(model["name"], model["version"], ERASURE_REVIEW_TAG, "required")
        client.set_model_version_tag(model["name"], model["version"], f"radgate.erasure.{erasure_id}", note)
        record(
            principal.name,
            "model.erasure_flag",
            model_target(model["name"], model["version"]),
            {"erasure_id": erasure_id, "dataset_version": model["dataset_version"]},
            role=principal.role.value,
        )
    for run_id in plan.runs:
        client.set_tag(run_id, ERASURE_REVIEW_TAG, "required")
        client.set_tag(run_id, f"radgate.erasure.{erasure_id}", note)


def erase_patient(
    patient_id: str,
    *,
    principal: Principal,
    approver: Principal,
    reason: str,
    settings: Settings | None = None,
) -> tuple[str, ErasurePlan, list[dict[str, Any]]]:
    """Erase ``patient_id``; the honest broker acts, an admin co-signs. Returns (erasure id, what
    was found, the superseded dataset versions and their successors)."""
    settings = settings or get_settings()
    _authorise(principal, "erasure", Role.HONEST_BROKER, "erasure:execute")
    _authorise(approver, "erasure.approve", Role.ADMIN, "erasure:execute")
    if not reason.strip():
        raise ErasureError("a reason is required")
    key = load_project_key(settings, create=False)
    catalog = open_catalog(settings)
    with catalog.session() as session:
        plan = _find(session, key, patient_id, settings)
    erasure_id = secrets.token_hex(8)
    reason_sha = hashlib.sha256(reason.encode()).hexdigest()
    counts = {
        "instances": len(plan.instances),
        "quarantined": len(plan.quarantine),
        "map_entries": plan.map_entries,
        "lineage_rows": plan.lineage_rows,
        "dataset_versions": len(plan.datasets),
        "model_versions": len(plan.models),
        "runs": len(plan.runs),
    }
    record(
        principal.name,
        "erasure.start",
        f"erasure:{erasure_id}",
        {"subject": plan.subject, "approved_by": approver.name, "reason_sha256": reason_sha, **counts},
        role=principal.role.value,
    )
    # Objects first: a crash after this point leaves catalog rows that a re-run removes.
    store = ContentStore.from_settings(settings)
    for _, store_key, _ in plan.instances:
        _delete_object(store, store_key)
    for path in plan.pending_inputs:
        Path(path).unlink(missing_ok=True)
    for _, sealed in plan.quarantine:
        Path(sealed).unlink(missing_ok=True)
        Path(sealed).with_suffix(".json").unlink(missing_ok=True)
    with catalog.session() as session:
        instances = list(
            session.scalars(select(Instance).where(Instance.patient_pseudonym == plan.pseudonym))
        )
        uids = {i.study_instance_uid for i in instances} | {i.series_instance_uid for i in instances}
        uids |= {i.sop_instance_uid for i in instances}
        inputs = {i[2] for i in plan.instances} | {q for q, _ in plan.quarantine}
        outputs = {i[0] for i in plan.instances}
        for table, column in _other_tables(session):
            values = _values(column, plan.pseudonym, inputs, outputs)
            if values:
                session.execute(delete(table).where(table.c[column].in_(values)))
        session.execute(delete(LineageEvent).where(_lineage_filter(inputs, outputs)))
        session.execute(delete(Pseudonym).where(_map_filter(plan.pseudonym, uids)))
        session.execute(
            delete(QuarantineRecord).where(
                QuarantineRecord.input_sha256.in_([q for q, _ in plan.quarantine] or [""])
            )
        )
        session.execute(delete(Instance).where(Instance.patient_pseudonym == plan.pseudonym))
        superseded = _supersede(session, plan, erasure_id)
        session.add(
            ErasureRecord(
                id=erasure_id,
                requested_by=principal.name,
                approved_by=approver.name,
                reason_sha256=reason_sha,
                summary={
                    "subject": plan.subject,
                    **counts,
                    "superseded": superseded,
                    "models": plan.models,
                    "runs": plan.runs,
                    "reason_sealed": base64.b64encode(
                        key.seal(reason.encode(), erasure_id.encode())
                    ).decode(),
                },
            )
        )
    _flag(plan, erasure_id, principal, settings)
    for entry in superseded:
        record(
            principal.name,
            "dataset.superseded",
            f"dataset:{entry['id']}",
            {"erasure_id": erasure_id, "successor": entry["successor"] or "none"},
            role=principal.role.value,
        )
    record(
        principal.name,
        "erasure.complete",
        f"erasure:{erasure_id}",
        {"subject": plan.subject, **counts, "superseded": len(superseded)},
        role=principal.role.value,
    )
    return erasure_id, plan, superseded


def list_erasures(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Completed erasures, newest first (no PHI; the sealed reason is left out)."""
    with open_catalog(settings or get_settings()).session() as session:
        rows = list(session.scalars(select(ErasureRecord).order_by(ErasureRecord.created_at.desc())))
        return [
            {
                "id": r.id,
                "created_at": r.created_at,
                "requested_by": r.requested_by,
                "approved_by": r.approved_by,
                "reason_sha256": r.reason_sha256,
                "summary": {k: v for k, v in (r.summary or {}).items() if k != "reason_sealed"},
            }
            for r in rows
        ]
