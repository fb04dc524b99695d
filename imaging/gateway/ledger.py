"""What ``radgate pull`` has already fetched from each PACS, so a pull can resume.

Instances are keyed by an HMAC of their original SOP Instance UID under the project key (the
original UID itself is never stored). A row is written only after the ingest path has
committed the instance (stored, duplicate or quarantined).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column

from governance.catalog import open_catalog
from governance.catalog.models import Base, utcnow
from governance.keys import load_project_key

__all__ = ["PullLedger", "PulledInstance"]


class PulledInstance(Base):
    __tablename__ = "gateway_pulled"
    __table_args__ = (UniqueConstraint("pacs", "lookup", name="uq_gateway_pulled"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pacs: Mapped[str] = mapped_column(String(64))
    lookup: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    input_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PullLedger:
    def __init__(self, pacs: str) -> None:
        self.pacs = pacs
        self._catalog = open_catalog()
        self._key = load_project_key()

    def lookup(self, sop_instance_uid: str) -> str:
        return self._key.mac("gateway-pull", f"{self.pacs}\0{sop_instance_uid}".encode()).hex()

    def done(self, sop_instance_uids: list[str]) -> set[str]:
        """Which of these original UIDs were already pulled from this PACS."""
        lookups = {self.lookup(uid): uid for uid in sop_instance_uids}
        found: set[str] = set()
        keys = list(lookups)
        with self._catalog.session() as session:
            for start in range(0, len(keys), 500):
                rows = session.scalars(
                    select(PulledInstance.lookup).where(
                        PulledInstance.pacs == self.pacs, PulledInstance.lookup.in_(keys[start : start + 500])
                    )
                )
                found.update(lookups[row] for row in rows)
        return found

    def record(self, sop_instance_uid: str, outcome: str, input_sha256: str | None) -> None:
        lookup = self.lookup(sop_instance_uid)
        with self._catalog.session() as session:
            exists = session.scalar(
                select(PulledInstance.id).where(
                    PulledInstance.pacs == self.pacs, PulledInstance.lookup == lookup
                )
            )
            if exists is None:
                session.add(
                    PulledInstance(pacs=self.pacs, lookup=lookup, outcome=outcome, input_sha256=input_sha256)
                )
