"""Patient erasure (GDPR Art. 17): find everything derived from one patient and remove it.

``plan_erasure(patient_id, principal=broker)`` (honest broker; audited) asks every declared
store (:mod:`imaging.compliance.holdings`) what it holds for the patient: the catalog (instance
rows, quarantined inputs, map entries, lineage rows, rows of other domains' tables keyed by the
patient), the content store's objects, serving's stores, and the MLflow runs and model versions
trained on the dataset versions holding the patient; it lists those dataset versions too.

``erase_patient(patient_id, principal=broker, approver=admin, reason=...)`` carries it out:
what each patient store holds removed, then in one catalog transaction what each catalog store
holds, the affected dataset versions superseded by successors without the patient and the
erasure recorded; then affected model versions and runs tagged
``radgate.erasure.review=required`` for governance review. The audit chain is
only appended to: entries name an opaque erasure id and a keyed subject digest, never the
patient's identifiers. Re-running is harmless (everything is found by keyed derivation too).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.audit import record
from governance.auth import Principal, Role, require_role
from governance.auth.roles import PermissionDenied
from governance.catalog import open_catalog
from governance.keyring import RECORD_ERASURE
from governance.keys import load_project_key
from governance.settings import Settings, get_settings
from imaging.compliance.erasure_find import (
    ERASURE_REVIEW_TAG,
    ErasureError,
    ErasurePlan,
    find_patient_data,
    superseded_by,
)
from imaging.compliance.holdings import CatalogStore, Erasure, PatientStore, ReviewStore, declared_stores
from imaging.compliance.models import DatasetSupersession, ErasureRecord
from imaging.datasets import DatasetManifest, DatasetVersionRecord

__all__ = [
    "ERASURE_REVIEW_TAG",
    "ErasureError",
    "ErasurePlan",
    "erase_patient",
    "list_erasures",
    "plan_erasure",
    "superseded_by",
]


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
        plan = find_patient_data(session, key, patient_id, settings)
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


def _supersede(session: Session, plan: ErasurePlan, erasure_id: str) -> list[dict[str, Any]]:
    out = []
    for entry in plan.datasets:
        rec = session.get(DatasetVersionRecord, entry["id"])
        if rec is None or superseded_by(rec.id, session=session) is not None:
            continue
        manifest = DatasetManifest.model_validate_json(rec.manifest_json)
        successor = manifest.without_patient(plan.pseudonym)  # items and series (segmentation)
        successor_id = None
        if successor.size:
            successor_id = successor.id
            if session.get(DatasetVersionRecord, successor_id) is None:
                summary = successor.summary()
                session.add(
                    DatasetVersionRecord(
                        id=successor_id,
                        name=rec.name,
                        instances=summary["instances"],
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
        out.append({"id": rec.id, "successor": successor_id, "removed_items": manifest.size - successor.size})
    return out


def erase_patient(
    patient_id: str,
    *,
    principal: Principal,
    approver: Principal | None = None,
    reason: str,
    confirmation: str | None = None,
    settings: Settings | None = None,
) -> tuple[str, ErasurePlan, list[dict[str, Any]]]:
    """Erase ``patient_id``; the honest broker acts, an admin co-signs. Returns (erasure id, what
    was found, the superseded dataset versions and their successors)."""
    settings = settings or get_settings()
    _authorise(principal, "erasure", Role.HONEST_BROKER, "erasure:execute")
    if approver is None and confirmation is None:
        raise ErasureError("an admin must co-sign: request, have an admin confirm (radgate erase-confirm)")
    if approver is not None:  # an admin authenticated in this process (library callers)
        _authorise(approver, "erasure.approve", Role.ADMIN, "erasure:execute")
    if not reason.strip():
        raise ErasureError("a reason is required")
    key = load_project_key(settings, create=False)
    catalog = open_catalog(settings)
    with catalog.session() as session:
        plan = find_patient_data(session, key, patient_id, settings)
    approved_by = approver.name if approver is not None else ""
    if confirmation is not None:
        from imaging.compliance.cosign import CosignError, confirmed_approver

        try:
            approved_by = confirmed_approver(principal, confirmation, plan.subject, reason)
        except CosignError as exc:
            raise ErasureError(str(exc)) from exc
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
        "unreadable": len(plan.unreadable),
        "stores": {h.store: h.count for h in plan.holdings},
    }
    record(
        principal.name,
        "erasure.start",
        f"erasure:{erasure_id}",
        {
            "subject": plan.subject,
            "approved_by": approved_by,
            "request_id": confirmation,
            "reason_sha256": reason_sha,
            **counts,
        },
        role=principal.role.value,
    )
    # Every declared store is loaded (and was asked, above) before anything is removed: one that
    # fails to load stops the erasure here.
    stores = {store.name: store for store in declared_stores()}
    if set(stores) != {holding.store for holding in [*plan.holdings, *plan.reviews]}:
        raise ErasureError("the declared patient stores changed since they were asked: run the erasure again")
    # Patient stores first (objects, sealed inputs, ...): a crash after this point leaves catalog
    # rows by which a re-run finds the patient again.
    for holding in plan.holdings:
        store = stores[holding.store]
        if isinstance(store, PatientStore):
            store.erase(holding)
    # Then the catalog stores' rows, the supersessions and the erasure's record: one transaction.
    with catalog.session() as session:
        for holding in plan.holdings:
            store = stores[holding.store]
            if isinstance(store, CatalogStore):
                store.erase_in(session, holding)
        superseded = _supersede(session, plan, erasure_id)
        session.add(
            ErasureRecord(
                id=erasure_id,
                requested_by=principal.name,
                approved_by=approved_by,
                reason_sha256=reason_sha,
                summary={
                    "subject": plan.subject,
                    **counts,
                    "superseded": superseded,
                    "models": plan.models,
                    "runs": plan.runs,
                    "reason_sealed": base64.b64encode(
                        key.seal(reason.encode(), erasure_id.encode(), record=RECORD_ERASURE)
                    ).decode(),
                },
            )
        )
    # Flags name the erasure: only once its record is committed.
    erasure = Erasure(erasure_id, plan.subject, principal.name, principal.role.value, settings)
    reviewers = {name: store for name, store in stores.items() if isinstance(store, ReviewStore)}
    unflagged = [item for holding in plan.reviews for item in reviewers[holding.store].flag(holding, erasure)]
    plan.unreadable.extend(unflagged)
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
        {"subject": plan.subject, **counts, "superseded": len(superseded), "unflagged": len(unflagged)},
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
