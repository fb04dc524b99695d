"""Serving's own sealed records and their key (``keys/serving-store.key``, serving only).

What serving keeps about a request until feedback (the input DICOM), what the reviewer UI may
show of it (the result view) and reviewers' free-text comments are sealed with AES-256-GCM
under serving's key, with the request id, the record type and the format version as
associated data. No other service holds this key; the honest broker's key does not open them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from governance.catalog import open_catalog
from governance.keyring import SERVING_STORE, StoreKey, load_store_key
from governance.settings import Settings, get_settings

__all__ = [
    "RECORD_FEEDBACK",
    "RECORD_INPUT",
    "RECORD_VIEW",
    "MonitoringError",
    "check_request_id",
    "pending_input_path",
    "reseal_serving_store",
    "serving_key",
    "view_path",
]

RECORD_INPUT = "monitoring-input"
RECORD_VIEW = "monitoring-view"
RECORD_FEEDBACK = "feedback-comment"

Unseal = Callable[[bytes, bytes, str], bytes]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class MonitoringError(RuntimeError):
    """A monitoring operation cannot be done (bad request id, unknown request...)."""


def check_request_id(request_id: str) -> str:
    """``request_id`` if it is 1-64 characters of letters, digits, . _ : - (else MonitoringError)."""
    if not _REQUEST_ID.match(request_id or ""):
        raise MonitoringError("request id must be 1-64 characters of letters, digits, . _ : -")
    return request_id


def _pending_dir(settings: Settings) -> Path:
    return settings.home / "monitoring" / "pending"


def pending_input_path(request_id: str, settings: Settings | None = None) -> Path:
    """Where a request's sealed input waits (file name: a hash of the id, not the id)."""
    settings = settings or get_settings()
    name = hashlib.sha256(check_request_id(request_id).encode()).hexdigest()
    return _pending_dir(settings) / f"{name}.sealed"


def view_path(request_id: str, settings: Settings) -> Path:
    """Where the request's sealed result view waits (beside ``pending/``, under ``views/``)."""
    pending = pending_input_path(request_id, settings)
    return pending.parent.parent / "views" / pending.name


def serving_key(settings: Settings | None = None) -> StoreKey:
    return load_store_key(SERVING_STORE, settings or get_settings())


def reseal_serving_store(unseal: Unseal, new: StoreKey, settings: Settings | None = None) -> dict[str, int]:
    """Re-seal every input, view and comment that ``unseal`` opens under ``new`` (rotation, or
    migration from the project key); returns counts per record type."""
    from serving.monitoring.models import FeedbackRecord, LiveRecord

    settings = settings or get_settings()
    counts = {RECORD_INPUT: 0, RECORD_VIEW: 0, RECORD_FEEDBACK: 0}
    catalog = open_catalog(settings)
    with catalog.session() as session:
        request_ids = list(session.scalars(select(LiveRecord.request_id)))
        for request_id in request_ids:
            aad = request_id.encode()
            for record, path in (
                (RECORD_INPUT, pending_input_path(request_id, settings)),
                (RECORD_VIEW, view_path(request_id, settings)),
            ):
                if path.exists():
                    fresh = new.seal(unseal(path.read_bytes(), aad, record), aad, record=record)
                    tmp = path.with_suffix(".reseal")
                    tmp.write_bytes(fresh)
                    tmp.chmod(0o600)
                    tmp.replace(path)
                    counts[record] += 1
        for row in session.scalars(select(FeedbackRecord).where(FeedbackRecord.comment_sealed.is_not(None))):
            aad = row.request_id.encode()
            plain = unseal(row.comment_sealed or b"", aad, RECORD_FEEDBACK)
            row.comment_sealed = new.seal(plain, aad, record=RECORD_FEEDBACK)
            counts[RECORD_FEEDBACK] += 1
    return counts
