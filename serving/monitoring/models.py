"""Catalog tables of monitoring (migration ``0006_monitoring``): live records, feedback, drift runs.

Nothing here is PHI: requests are named by the id serving gave them, features are numbers and
non-identifying acquisition attributes, and a reviewer's free-text comment is sealed with the
project key (it could name a patient).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from governance.catalog import Base, utcnow

__all__ = ["DriftRun", "FeedbackRecord", "LiveRecord"]


class LiveRecord(Base):
    """One served request's features (see ``training.reference_profile``)."""

    __tablename__ = "monitoring_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: PCA projection of the penultimate embedding (the reference profile's space).
    embedding: Mapped[list[float]] = mapped_column(JSON)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    predicted_label: Mapped[str] = mapped_column(String(64))
    #: When the sealed input kept for possible feedback expires (``None``: none kept).
    input_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)


class FeedbackRecord(Base):
    """A clinical reviewer's verdict on one served request."""

    __tablename__ = "monitoring_feedback"
    __table_args__ = (
        UniqueConstraint("request_id", "reviewer", name="uq_monitoring_feedback_request_reviewer"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    model_name: Mapped[str] = mapped_column(String(128), index=True)
    model_version: Mapped[str] = mapped_column(String(32))
    reviewer: Mapped[str] = mapped_column(String(64))
    agree: Mapped[bool] = mapped_column(Boolean)
    predicted_label: Mapped[str] = mapped_column(String(64))
    #: The label the case should carry: the prediction when the reviewer agrees, else the correction.
    label: Mapped[str] = mapped_column(String(64))
    comment_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: sha256 of the de-identified instance in the store (the labels CSV key), when kept.
    instance_sha256: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    input_status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DriftRun(Base):
    """The outcome of one drift check (the full report is in the JSON file it wrote)."""

    __tablename__ = "monitoring_drift_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128), index=True)
    model_version: Mapped[str] = mapped_column(String(32))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    n_live: Mapped[int] = mapped_column(Integer)
    drifted: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
