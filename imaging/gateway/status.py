"""What the gateway answers for each received instance, in DIMSE and DICOMweb terms.

A success (C-STORE 0x0000, a STOW ReferencedSOPSequence item) is given only for an outcome the
ingest path has committed: de-identified and stored, or already stored. Everything else is a
failure the sender can act on; nothing here ever carries PHI (only reason codes).
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imaging.ingest import IngestOutcome

__all__ = ["StoreStatus", "Verdict", "verdict_for_error", "verdict_for_outcome"]


class StoreStatus(enum.IntEnum):
    """Storage Service status codes (PS3.4 Table B.2-1), shared by DIMSE and STOW-RS (PS3.18)."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class Verdict:
    status: StoreStatus
    comment: str  # short, PHI-free; fits ErrorComment (LO, 64 chars)

    @property
    def ok(self) -> bool:
        return self.status is StoreStatus.SUCCESS


def verdict_for_outcome(outcome: IngestOutcome) -> Verdict:
    from imaging.ingest import IngestStatus

    if outcome.status in (IngestStatus.DEIDENTIFIED, IngestStatus.DUPLICATE):
        return Verdict(StoreStatus.SUCCESS, "")
    reason = (outcome.reason or "unspecified").replace("\\", "/")
    return Verdict(StoreStatus.CANNOT_UNDERSTAND, f"quarantined: {reason}"[:64])


def verdict_for_error(exc: BaseException) -> Verdict:
    """The ingest path raised: nothing was committed for this instance, the sender must retry."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
        return Verdict(StoreStatus.OUT_OF_RESOURCES, "storage full")
    if isinstance(exc, MemoryError):
        return Verdict(StoreStatus.OUT_OF_RESOURCES, "out of memory")
    return Verdict(StoreStatus.PROCESSING_FAILURE, f"not stored: {type(exc).__name__}"[:64])
