"""Where received instances go: the platform's ingest path (``imaging.ingest.Ingestor``).

The gateway depends only on this one method, so the SCP, STOW-RS and pull share exactly the
validation, de-identification, store and lineage path of ``radgate ingest``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from imaging.ingest import IngestOutcome

__all__ = ["Sink", "default_sink"]


class Sink(Protocol):
    def ingest_bytes(self, data: bytes, source: str, *, input_sha256: str | None = None) -> IngestOutcome:
        """De-identify, store and record one encoded instance; return after the catalog commit.
        ``input_sha256`` is the sha256 of ``data`` when the caller has it (not computed again)."""
        ...


def default_sink() -> Sink:
    """The ingest path, warmed up: a service loads its OCR models at start, not on the first
    instance a PACS sends (which would wait for them, and the memory would arrive later)."""
    import logging

    from imaging.ingest import Ingestor

    ingestor = Ingestor()
    if not ingestor.warm_up():
        logging.getLogger(__name__).warning(
            "no OCR engine could be loaded: instances with pixel data will be quarantined "
            "(pixel_ocr_unavailable)"
        )
    sink: Sink = ingestor
    return sink
