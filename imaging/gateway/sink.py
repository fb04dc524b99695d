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
    from imaging.ingest import Ingestor

    sink: Sink = Ingestor()
    return sink
