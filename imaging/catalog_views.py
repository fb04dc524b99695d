"""Read-only views of the catalog for the CLI and the web UI (pseudonymous identifiers only)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from governance.catalog import Instance, LineageEvent, QuarantineRecord, open_catalog

__all__ = ["LEVELS", "catalog_view"]

LEVELS = ("summary", "studies", "series", "instances", "quarantine")


def catalog_view(level: str, limit: int = 50) -> list[dict[str, Any]]:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    catalog = open_catalog()
    with catalog.session() as s:
        if level == "summary":
            count = lambda q: s.scalar(q) or 0  # noqa: E731
            return [
                {
                    "what": "patients",
                    "count": count(select(func.count(func.distinct(Instance.patient_pseudonym)))),
                },
                {
                    "what": "studies",
                    "count": count(select(func.count(func.distinct(Instance.study_instance_uid)))),
                },
                {
                    "what": "series",
                    "count": count(select(func.count(func.distinct(Instance.series_instance_uid)))),
                },
                {"what": "instances", "count": count(select(func.count(Instance.id)))},
                {"what": "bytes", "count": count(select(func.sum(Instance.size)))},
                {"what": "quarantined", "count": count(select(func.count(QuarantineRecord.id)))},
                {"what": "lineage events", "count": count(select(func.count(LineageEvent.id)))},
            ]
        if level == "studies":
            q = (
                select(
                    Instance.study_instance_uid,
                    Instance.patient_pseudonym,
                    func.count(func.distinct(Instance.series_instance_uid)),
                    func.count(Instance.id),
                    func.min(Instance.modality),
                )
                .group_by(Instance.study_instance_uid, Instance.patient_pseudonym)
                .limit(limit)
            )
            return [
                {"study_uid": r[0], "patient": r[1], "series": r[2], "instances": r[3], "modality": r[4]}
                for r in s.execute(q)
            ]
        if level == "series":
            q3 = (
                select(
                    Instance.series_instance_uid,
                    Instance.study_instance_uid,
                    func.min(Instance.modality),
                    func.count(Instance.id),
                )
                .group_by(Instance.series_instance_uid, Instance.study_instance_uid)
                .limit(limit)
            )
            return [
                {"series_uid": r[0], "study_uid": r[1], "modality": r[2], "instances": r[3]}
                for r in s.execute(q3)
            ]
        if level == "instances":
            q4 = select(Instance).order_by(Instance.id.desc()).limit(limit)
            return [
                {
                    "sop_uid": i.sop_instance_uid,
                    "modality": i.modality,
                    "sha256": i.sha256[:16],
                    "size": i.size,
                    "profile": i.profile,
                    "created": i.created_at,
                }
                for i in s.scalars(q4)
            ]
        q2 = select(QuarantineRecord).order_by(QuarantineRecord.id.desc()).limit(limit)
        return [
            {
                "input_sha256": r.input_sha256[:16],
                "reason": r.reason,
                "detail": r.detail,
                "size": r.size,
                "source": r.source,
                "created": r.created_at,
            }
            for r in s.scalars(q2)
        ]
