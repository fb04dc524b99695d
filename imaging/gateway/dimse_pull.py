"""Pull over DIMSE for a PACS without DICOMweb: C-FIND (Study Root) to list studies, series and
instances, C-GET per instance on one association (the instances come back on it, so the PACS
needs to know only our AE title, not a route back to our port).

Same interface as :class:`imaging.gateway.pull.DicomwebSource`, so ``pull()`` keeps its ledger,
progress and error handling.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from imaging.gateway.config import PacsPeer
from imaging.gateway.pull_source import InstanceRef, PullError
from imaging.gateway.scp import STORAGE_TRANSFER_SYNTAXES, set_tcp_nodelay

__all__ = ["DimseSource"]

LOGGER = logging.getLogger(__name__)
_PENDING = (0xFF00, 0xFF01)
_MAX_STORAGE_CLASSES = 120  # 128 presentation contexts, minus C-FIND, C-GET and C-MOVE


class DimseSource:
    def __init__(self, peer: PacsPeer, calling_ae: str = "RADGATE", timeout: float = 120.0) -> None:
        self.peer = peer
        self.calling_ae = calling_ae
        self.timeout = timeout
        self._classes: list[str] = []
        self._assoc: Association | None = None
        self._assoc_classes: tuple[str, ...] = ()
        self._received: list[bytes] = []

    # -- association -----------------------------------------------------------------------

    def _associate(self, with_storage: bool) -> Association:
        wanted = tuple(self._classes) if with_storage else ()
        if self._assoc is not None and self._assoc.is_established and set(wanted) <= set(self._assoc_classes):
            return self._assoc
        self.close()
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        contexts = [
            build_context(StudyRootQueryRetrieveInformationModelFind),
            build_context(StudyRootQueryRetrieveInformationModelGet),
            build_context(StudyRootQueryRetrieveInformationModelMove),
        ]
        contexts += [build_context(uid, list(STORAGE_TRANSFER_SYNTAXES)) for uid in wanted]
        ae.requested_contexts = contexts
        assoc = ae.associate(
            self.peer.host,
            self.peer.port,
            ae_title=self.peer.ae_title,
            ext_neg=[build_role(uid, scp_role=True) for uid in wanted],
            evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay), (evt.EVT_C_STORE, self._on_store)],
            tls_args=self.peer.tls_args(),
        )
        if not assoc.is_established:
            raise PullError(f"PACS {self.peer.name!r} refused the association")
        self._assoc, self._assoc_classes = assoc, wanted
        return assoc

    def close(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()
        self._assoc = None

    def _on_store(self, event: evt.Event) -> int:
        self._received.append(event.encoded_dataset(include_meta=True))
        return 0x0000  # kept in memory; ingest happens right after the C-GET completes

    # -- C-FIND ----------------------------------------------------------------------------

    def _find(self, query: Dataset) -> list[Dataset]:
        assoc = self._associate(with_storage=False)
        results: list[Dataset] = []
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if not status:
                raise PullError("C-FIND: the association failed")
            code = int(status.Status)
            if code in _PENDING:
                if identifier is None:  # a match the PACS announced but we could not decode
                    raise PullError("C-FIND: a pending response came without a decodable identifier")
                results.append(identifier)
            elif code != 0x0000:
                raise PullError(f"C-FIND answered status 0x{code:04X}")
        return results

    def search_studies(self, filters: dict[str, str]) -> list[str]:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        for keyword, value in filters.items():
            if tag_for_keyword(keyword) is None:
                raise PullError(f"unknown query attribute {keyword!r}")
            setattr(query, keyword, value if dictionary_VR(keyword) != "US" else int(value))
        return [str(ds.StudyInstanceUID) for ds in self._find(query) if ds.get("StudyInstanceUID")]

    def search_instances(self, study: str) -> list[InstanceRef]:
        series_query = Dataset()
        series_query.QueryRetrieveLevel = "SERIES"
        series_query.StudyInstanceUID = study
        series_query.SeriesInstanceUID = ""
        series_query.NumberOfSeriesRelatedInstances = ""
        refs: list[InstanceRef] = []
        for series in self._find(series_query):
            for image in self._series_instances(study, series):
                sop_class = str(image.get("SOPClassUID", ""))
                if sop_class and sop_class not in self._classes:
                    self._classes.append(sop_class)
                refs.append(InstanceRef(study, str(series.SeriesInstanceUID), str(image.SOPInstanceUID)))
        if len(self._classes) > _MAX_STORAGE_CLASSES:
            raise PullError(f"{len(self._classes)} SOP classes: too many for one C-GET association")
        return refs

    def _series_instances(self, study: str, series: Dataset) -> list[Dataset]:
        """The image-level matches of one series. Where the PACS gave the series' instance count
        (NumberOfSeriesRelatedInstances, optional for an SCP), a listing that falls short of it is
        asked once more and then refused: a short listing would otherwise pull part of a series
        and report success."""
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study
        query.SeriesInstanceUID = series.SeriesInstanceUID
        query.SOPInstanceUID = ""
        query.SOPClassUID = ""
        expected = _count(series.get("NumberOfSeriesRelatedInstances"))
        images: list[Dataset] = []
        for _attempt in range(2):
            images = [image for image in self._find(query) if image.get("SOPInstanceUID")]
            if expected is None or len(images) >= expected:
                return images
            LOGGER.warning("C-FIND listed %d of a series' %d instances; asking again", len(images), expected)
        raise PullError(f"C-FIND listed {len(images)} of a series' {expected} instances")

    # -- C-GET -----------------------------------------------------------------------------

    def retrieve(self, ref: InstanceRef) -> bytes:
        assoc = self._associate(with_storage=True)
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID, query.SeriesInstanceUID, query.SOPInstanceUID = ref.study, ref.series, ref.sop
        self._received = []
        final: Any = None
        for status, _identifier in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if not status:
                self.close()
                raise PullError("C-GET: the association failed")
            if int(status.Status) not in _PENDING:
                final = int(status.Status)
        if final not in (0x0000, 0xB000) or len(self._received) != 1:
            raise PullError(f"C-GET returned {len(self._received)} instances, status {final}")
        return self._received[0]

    # -- C-MOVE ----------------------------------------------------------------------------

    def move(self, ref: InstanceRef, destination: str | None = None) -> None:
        """C-MOVE one instance to ``destination`` (default: our AE title, i.e. the running
        gateway). Returns once the PACS reports the sub-operation complete, which the gateway
        acknowledged only after the ingest committed."""
        assoc = self._associate(with_storage=False)
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID, query.SeriesInstanceUID, query.SOPInstanceUID = ref.study, ref.series, ref.sop
        final: Any = None
        failed = 0
        for status, _identifier in assoc.send_c_move(
            query, destination or self.calling_ae, StudyRootQueryRetrieveInformationModelMove
        ):
            if not status:
                self.close()
                raise PullError("C-MOVE: the association failed")
            if int(status.Status) not in _PENDING:
                final = int(status.Status)
                failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
        if final != 0x0000 or failed:
            raise PullError(f"C-MOVE ended with status {final}, {failed} failed sub-operations")


def _count(value: Any) -> int | None:
    """An IS/US count from a C-FIND identifier, or None when absent or unreadable."""
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
