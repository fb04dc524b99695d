"""Catalog tables of the imaging domain: stored instances, quarantine, lineage, pseudonyms.

Other domains (audit, users, datasets, monitoring) add their own tables on the same
``Base`` and their own migration revisions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Instance", "LineageEvent", "Pseudonym", "QuarantineRecord", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Instance(Base):
    """A de-identified instance held in the content-addressed store."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    input_sha256: Mapped[str] = mapped_column(String(64), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    patient_pseudonym: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    store_key: Mapped[str] = mapped_column(String(255))
    profile: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(32))
    # Non-identifying attributes kept by the profile (sex, age band, manufacturer, site...),
    # used by datasets for subgroup analysis.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class QuarantineRecord(Base):
    """An input that could not be de-identified safely; its bytes are sealed under the key."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    input_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(String(1024))
    source: Mapped[str] = mapped_column(String(255), index=True)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(nullable=True)


class LineageEvent(Base):
    """One processing step: what came in, what went out, under which profile and key."""

    __tablename__ = "lineage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    input_sha256: Mapped[str] = mapped_column(String(64), index=True)
    output_sha256: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    profile: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(255), index=True)
    software: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Pseudonym(Base):
    """Original identifier -> pseudonym, the original sealed with AES-GCM.

    ``lookup`` is an HMAC of the original, so a known original can be found without
    decrypting the table; reading originals back is the honest broker's ``radgate reid``.
    """

    __tablename__ = "pseudonyms"
    __table_args__ = (
        UniqueConstraint("kind", "lookup", name="uq_pseudonym_lookup"),
        Index("ix_pseudonym_value", "kind", "pseudonym"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    pseudonym: Mapped[str] = mapped_column(String(128))
    lookup: Mapped[str] = mapped_column(String(64))
    sealed_original: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
