"""Catalog tables of the compliance domain (migration ``0005_compliance``).

``erasures``: one row per patient-erasure request (no PHI: an opaque id, counts, hashes);
``dataset_supersessions``: a dataset version replaced by a successor (after an erasure).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from governance.catalog.models import Base, utcnow

__all__ = ["DatasetSupersession", "ErasureRecord"]


class ErasureRecord(Base):
    """A completed patient erasure: what was removed and what was flagged, by count and hash."""

    __tablename__ = "erasures"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    approved_by: Mapped[str] = mapped_column(String(64))
    reason_sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetSupersession(Base):
    """``version_id`` must no longer be used; ``successor_id`` is the same data without the erased patient."""

    __tablename__ = "dataset_supersessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[str] = mapped_column(String(64), index=True)
    successor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(String(32))  # erasure
    erasure_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
