"""Retention: nothing identifying is kept longer than it may be (GDPR Art. 5(1)(e)).

Quarantined inputs (sealed, still with PHI) should be reviewed, released or erased within
``max_quarantine_age_days`` (the compliance thresholds' review prompt, not a store's limit).
Every declared store (:mod:`imaging.compliance.holdings`: the catalog, the content store,
serving's, ...) reports what it keeps past its own limit (for serving: sealed inputs past their
feedback window, and sealed inputs no record names) as ``*_overdue`` and ``*_orphaned`` counts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from governance.catalog import QuarantineRecord, open_catalog
from governance.settings import Settings
from imaging.compliance.holdings import declared_stores

__all__ = ["retention_findings", "retention_violations"]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def retention_findings(settings: Settings, now: datetime, max_quarantine_age_days: int) -> dict[str, Any]:
    """Each store's overdue and orphaned counts, and the quarantine records older than the limit."""
    found: dict[str, Any] = {}
    for store in declared_stores():
        found.update(store.retention(settings, now))
    cutoff = now - timedelta(days=max_quarantine_age_days)
    with open_catalog(settings).session() as session:
        old_quarantine = [
            r.input_sha256[:12]
            for r in session.scalars(select(QuarantineRecord).where(QuarantineRecord.released_at.is_(None)))
            if _aware(r.created_at) < cutoff
        ]
    found.update(
        {
            "quarantine_older_than_limit": len(old_quarantine),
            "quarantine_old": old_quarantine[:50],
            "max_quarantine_age_days": max_quarantine_age_days,
        }
    )
    return found


def retention_violations(found: dict[str, Any]) -> dict[str, int]:
    """The stores' counts of items kept past their limit (``*_overdue``, ``*_orphaned``) above 0."""
    return {k: int(v) for k, v in found.items() if k.endswith(("_overdue", "_orphaned")) and int(v) > 0}
