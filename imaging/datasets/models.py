"""Catalog table of dataset versions (migration ``0003_datasets``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from governance.catalog.models import Base, utcnow

__all__ = ["DatasetVersionRecord"]


class DatasetVersionRecord(Base):
    """An immutable dataset version: its id is the SHA-256 of ``manifest_json``."""

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    instances: Mapped[int] = mapped_column(Integer)
    patients: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    manifest_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
