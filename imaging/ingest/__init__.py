"""Ingestion: folders in parallel (``run_files``) and single instances from the network (``Ingestor``)."""

from imaging.ingest.ingestor import Ingestor, IngestOutcome, IngestStatus
from imaging.ingest.recorder import CatalogRecorder, Result
from imaging.ingest.runner import RunReport, Sink, iter_files, run_files

__all__ = [
    "CatalogRecorder",
    "IngestOutcome",
    "IngestStatus",
    "Ingestor",
    "Result",
    "RunReport",
    "Sink",
    "iter_files",
    "run_files",
]
