"""``radgate push``: C-STORE SCU of DICOM files to a configured PACS (results back to the
hospital: Secondary Captures, Structured Reports...).

One association carries every file; presentation contexts are proposed per SOP class with
each file's own transfer syntax plus the uncompressed ones, so nothing is re-encoded unless the
PACS refuses the original encoding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.presentation import PresentationContext

from imaging.gateway.config import PacsPeer
from imaging.gateway.scp import set_tcp_nodelay

__all__ = ["PushError", "PushReport", "iter_dicom_files", "push_files"]

LOGGER = logging.getLogger(__name__)
_MAX_CONTEXTS = 128


class PushError(RuntimeError):
    """The PACS could not be reached or refused the association."""


@dataclass
class PushReport:
    sent: int = 0
    failed: list[tuple[str, int]] = field(default_factory=list)  # (path, status)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


def iter_dicom_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _contexts(files: list[tuple[Path, str, str]]) -> list[PresentationContext]:
    """One context per (SOP class, encoding) so that the PACS can accept each file as it is,
    plus an uncompressed fallback per SOP class."""
    uncompressed = [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)]
    wanted: dict[tuple[str, str], list[str]] = {}
    for _, sop_class, syntax in files:
        wanted.setdefault((sop_class, "uncompressed"), uncompressed)
        if syntax not in uncompressed:
            wanted.setdefault((sop_class, syntax), [syntax])
    if len(wanted) > _MAX_CONTEXTS:
        raise PushError(f"{len(wanted)} presentation contexts needed in one push; at most {_MAX_CONTEXTS}")
    return [build_context(sop_class, syntaxes) for (sop_class, _), syntaxes in wanted.items()]


def push_files(
    peer: PacsPeer,
    paths: Iterable[Path],
    calling_ae: str = "RADGATE",
    progress: Callable[[Path, int], None] | None = None,
    timeout: float = 60.0,
) -> PushReport:
    """C-STORE every DICOM file under ``paths`` to ``peer``; returns per-file outcomes."""
    report = PushReport()
    files: list[tuple[Path, str, str]] = []
    for path in iter_dicom_files(paths):
        try:
            meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
            files.append((path, str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
        except (InvalidDicomError, AttributeError, OSError, ValueError):
            report.skipped.append((str(path), "not a DICOM file with file meta"))
    if not files:
        return report

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.requested_contexts = _contexts(files)
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)],
        tls_args=peer.tls_args(),
    )
    if not assoc.is_established:
        where = f"{peer.ae_title}@{peer.host}:{peer.port}"
        raise PushError(f"PACS {peer.name!r} ({where}) refused the association")
    try:
        for path, _, _ in files:
            try:
                response = assoc.send_c_store(path)
            except (ValueError, RuntimeError) as exc:  # no accepted context for this file
                report.skipped.append((str(path), type(exc).__name__))
                continue
            status = int(response.Status) if "Status" in response else -1
            if status in (0x0000, 0xB000, 0xB007, 0xB006):
                report.sent += 1
            else:
                report.failed.append((str(path), status))
            if progress:
                progress(path, status)
            if not assoc.is_established:
                raise PushError(f"PACS {peer.name!r} dropped the association")
    finally:
        if assoc.is_established:
            assoc.release()
    return report
