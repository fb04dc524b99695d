"""Retention: nothing identifying is kept longer than it may be (GDPR Art. 5(1)(e)).

Served requests' raw inputs that serving keeps sealed while feedback may come
(``RADGATE_HOME/monitoring/pending/<sha256 of the request id>.sealed``) must be gone once
their ``input_expires_at`` passed; quarantined inputs (sealed, still with PHI) should be
reviewed, released or erased within ``max_quarantine_age_days``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import MetaData, Table, inspect, select

from governance.catalog import QuarantineRecord, open_catalog
from governance.settings import Settings

__all__ = ["retention_findings"]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def retention_findings(settings: Settings, now: datetime, max_quarantine_age_days: int) -> dict[str, Any]:
    """Counts of overdue pending inputs, orphaned pending files and old quarantine records."""
    folder = settings.home / "monitoring" / "pending"
    overdue, known = 0, set()
    catalog = open_catalog(settings)
    with catalog.session() as session:
        bind = session.get_bind()
        if "monitoring_records" in inspect(bind).get_table_names():
            records = Table("monitoring_records", MetaData(), autoload_with=bind)
            query = select(records.c.request_id, records.c.input_expires_at).where(
                records.c.input_expires_at.isnot(None)
            )
            for request_id, expires in session.execute(query):
                name = f"{hashlib.sha256(str(request_id).encode()).hexdigest()}.sealed"
                known.add(name)
                if (folder / name).exists() and _aware(expires) < now:
                    overdue += 1
        cutoff = now - timedelta(days=max_quarantine_age_days)
        old_quarantine = [
            r.input_sha256[:12]
            for r in session.scalars(select(QuarantineRecord).where(QuarantineRecord.released_at.is_(None)))
            if _aware(r.created_at) < cutoff
        ]
    orphans = [p.name[:12] for p in folder.glob("*.sealed") if p.name not in known] if folder.exists() else []
    return {
        "pending_inputs_overdue": overdue,
        "pending_inputs_orphaned": len(orphans),
        "quarantine_older_than_limit": len(old_quarantine),
        "quarantine_old": old_quarantine[:50],
        "max_quarantine_age_days": max_quarantine_age_days,
    }
