"""The DIMSE side of the gateway: a Storage SCP (every storage SOP class, the common transfer
syntaxes) and Verification SCP on pynetdicom, with an AE-title / host allow-list.

Each C-STORE is handed, still encoded, to the ingest sink from the association's own thread;
the response status is chosen only after the sink returns, i.e. after the de-identified object
is durable and its catalog record committed. Shutdown stops accepting, then lets associations
in flight finish (drain) before aborting what is left.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache, partial
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import (
    AE,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    _config,
    build_context,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from imaging.gateway.config import DicomListener
from imaging.gateway.sink import Sink
from imaging.gateway.status import StoreStatus, Verdict, verdict_for_error, verdict_for_outcome
from imaging.gateway.wakeups import install as install_wakeups

__all__ = [
    "STORAGE_TRANSFER_SYNTAXES",
    "AcceptBalance",
    "GatewayStats",
    "StorageSCP",
    "audit",
    "freeze_startup_heap",
    "set_tcp_nodelay",
]

LOGGER = logging.getLogger(__name__)

# Uncompressed first: pynetdicom accepts the first of ours the requestor also proposes.
STORAGE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    UID("1.2.840.10008.1.2.4.201"),  # HTJ2K Lossless
    UID("1.2.840.10008.1.2.4.202"),  # HTJ2K Lossless RPCL
    UID("1.2.840.10008.1.2.4.203"),  # HTJ2K
)

# pynetdicom logs dataset identifiers (patient IDs, UIDs) by default: never here.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
_config.LOG_HANDLER_LEVEL = "none"


def set_tcp_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle (a C-STORE otherwise waits ~90 ms on delayed ACK)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed by the peer
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def freeze_startup_heap() -> None:
    """Once the ingest path is built: move what start-up allocated (modules, dictionaries, the
    catalog, the de-identification profile) out of the cyclic collector's reach. Its full
    collections otherwise walk all of it again, a pause of 70-270 ms every few hundred
    instances that the instance in flight waits through. Garbage made later is still collected."""
    gc.collect()
    gc.freeze()


@dataclass
class GatewayStats:
    """Counters since start (thread-safe); no identifiers."""

    associations: int = 0
    rejected_associations: int = 0
    stored: int = 0
    failed: int = 0
    quarantined: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "associations": self.associations,
                "rejected_associations": self.rejected_associations,
                "stored": self.stored,
                "failed": self.failed,
                "quarantined": self.quarantined,
            }


class AcceptBalance:
    """Spreads associations over pre-forked workers sharing one listening socket: a worker
    that holds more associations than the least busy one lets it accept, unless that one has
    not taken the connection within ``patience`` seconds. ``counts`` is shared memory (one
    slot per worker, each written only by its own worker)."""

    def __init__(self, counts: Any, index: int, patience: float = 0.05) -> None:
        self.counts = counts
        self.index = index
        self.patience = patience
        self._lock = threading.Lock()
        self._deferring_since: float | None = None

    def defer(self) -> bool:
        mine = self.counts[self.index]
        others = [c for i, c in enumerate(self.counts) if i != self.index]
        if not others or mine <= min(others):
            self._deferring_since = None
            return False
        now = time.monotonic()
        if self._deferring_since is None:
            self._deferring_since = now
        if now - self._deferring_since > self.patience:
            self._deferring_since = None
            return False
        return True

    def opened(self) -> None:
        with self._lock:
            self.counts[self.index] += 1

    def closed(self) -> None:
        with self._lock:
            self.counts[self.index] -= 1


class _SharedContexts(list[Any]):
    """The SCP's supported presentation contexts, handed to every association as they are.

    pynetdicom deep-copies them for each association (some 250,000 objects with every storage
    SOP class, tens of ms of CPU), but negotiation only reads them and ``_on_requested``
    replaces the association's list anyway: a shallow copy does."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


class _RequestHandler(RequestHandler):
    """pynetdicom's handler; its associations wake on events instead of polling every 1 ms."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        install_wakeups(assoc)
        return assoc


class _AssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with optional accept balancing between processes."""

    balance: AcceptBalance | None = None

    def _handle_request_noblock(self) -> None:
        if self.balance is not None and self.balance.defer():
            time.sleep(0.002)  # the less busy worker is woken by the same connection
            return
        super()._handle_request_noblock()  # type: ignore[misc]

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.balance is not None:
            self.balance.opened()  # counted before the next accept decision, not in the thread
        try:
            super().process_request(request, client_address)
        except BaseException:
            if self.balance is not None:
                self.balance.closed()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            if self.balance is not None:
                self.balance.closed()


class StorageSCP:
    """The C-STORE / C-ECHO acceptor. ``start()`` returns once it listens; ``stop()`` drains."""

    def __init__(self, listener: DicomListener, sink: Sink, stats: GatewayStats | None = None) -> None:
        self.listener = listener
        self.sink = sink
        self.stats = stats or GatewayStats()
        self._server: ThreadedAssociationServer | None = None
        self._lock = threading.Lock()
        self._per_association: dict[int, dict[str, int]] = {}
        self.ae = self._make_ae()
        # Senders propose the same contexts on every association: the accepted list is built
        # once per proposal (some 15 ms of CPU each time otherwise; negotiation only reads it).
        supported = tuple(self.ae.supported_contexts)
        self._accepted = lru_cache(maxsize=64)(partial(_reordered, supported))

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.listener.ae_title)
        ae.maximum_associations = self.listener.max_associations
        ae.maximum_pdu_size = self.listener.max_pdu
        ae.network_timeout = self.listener.network_timeout
        ae.acse_timeout = self.listener.acse_timeout
        ae.dimse_timeout = self.listener.dimse_timeout
        ae.require_called_aet = self.listener.require_called_ae_title
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), list(STORAGE_TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        return ae

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the SCP is not running")
        return int(self._server.server_address[1])

    def bind(self) -> None:
        """Create the listening socket (no thread yet: worker processes fork after this)."""
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, set_tcp_nodelay),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
        ]
        self._server = cast(
            _AssociationServer,
            self.ae.make_server(
                (self.listener.host, self.listener.port),
                evt_handlers=handlers,
                server_class=_AssociationServer,
                request_handler=_RequestHandler,
            ),
        )
        self._server.contexts = _SharedContexts(self._server.contexts)

    def balance_with(self, balance: AcceptBalance) -> None:
        """In a pre-forked worker: accept without waiting (another worker may have taken the
        connection) and leave connections to less busy workers."""
        if self._server is None or self._server.socket is None:
            raise RuntimeError("bind() the SCP first")
        cast(_AssociationServer, self._server).balance = balance
        self._server.socket.settimeout(0.0)

    def serve(self) -> None:
        """Accept associations in a background thread (each association gets its own thread)."""
        if self._server is None:
            raise RuntimeError("bind() the SCP first")
        self.ae._servers.append(self._server)
        threading.Thread(target=self._server.serve_forever, name="storage-scp", daemon=True).start()

    def start(self) -> None:
        self.bind()
        self.serve()

    def close_listener(self) -> None:
        """Close this process's copy of the listening socket (the workers keep theirs). Not
        ``server_close()``: its shutdown(SHUT_RDWR) would stop the shared socket listening."""
        if self._server is not None and self._server.socket is not None:
            self._server.socket.close()

    def active_associations(self) -> int:
        return len(self._server.active_associations) if self._server else 0

    def stop(self, drain_timeout: float = 60.0) -> int:
        """Stop accepting, wait up to ``drain_timeout`` s for associations in flight, abort the
        rest. Returns how many had to be aborted."""
        server, self._server = self._server, None
        if server is None:
            return 0
        socketserver.BaseServer.shutdown(server)  # leave serve_forever; no new associations
        server.server_close()
        deadline = time.monotonic() + drain_timeout
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = server.active_associations
        for assoc in leftovers:
            assoc.abort()
        if server in self.ae._servers:
            self.ae._servers.remove(server)
        return len(leftovers)

    # Handlers run in the association's thread.

    def _on_requested(self, event: evt.Event) -> None:
        primitive = event.assoc.requestor.primitive
        calling_ae = str(primitive.calling_ae_title if primitive else "").strip()
        host = event.assoc.requestor.address
        if self.listener.permits(calling_ae, host):
            self.stats.add(associations=1)
            event.assoc.acceptor.supported_contexts = list(self._accepted(_proposal(event.assoc)))
            return
        self.stats.add(rejected_associations=1)
        LOGGER.warning("association rejected: calling AE %r from %s not allowed", calling_ae, host)
        audit(f"ae:{calling_ae or '-'}", "gateway.association-rejected", f"dimse:{host}")
        # rejected-permanent, service-user, calling AE title not recognised; kill() lets the
        # DUL flush the A-ASSOCIATE-RJ before the socket closes (as pynetdicom's own rejects).
        event.assoc.acse.send_reject(0x01, 0x01, 0x03)
        event.assoc.kill()

    def _on_echo(self, event: evt.Event) -> int:
        return 0x0000

    def _on_store(self, event: evt.Event) -> Dataset:
        requestor = event.assoc.requestor
        source = f"c-store:{requestor.ae_title}@{requestor.address}"
        try:
            data = part10_bytes(event)
            outcome = self.sink.ingest_bytes(data, source)
            verdict = verdict_for_outcome(outcome)
        except Exception as exc:  # the sender must hear "not stored", whatever broke
            LOGGER.error("C-STORE from %s not stored: %s", requestor.ae_title, type(exc).__name__)
            verdict = verdict_for_error(exc)
        else:
            if verdict.status is StoreStatus.CANNOT_UNDERSTAND:
                self.stats.add(quarantined=1)
        self.stats.add(stored=1) if verdict.ok else self.stats.add(failed=1)
        with self._lock:
            counts = self._per_association.setdefault(id(event.assoc), {"stored": 0, "failed": 0})
            counts["stored" if verdict.ok else "failed"] += 1
        return _status_dataset(verdict)

    def _on_closed(self, event: evt.Event) -> None:
        """One audit entry per association that stored something: who, from where, counts."""
        with self._lock:
            counts = self._per_association.pop(id(event.assoc), None)
        if counts:
            primitive = event.assoc.requestor.primitive
            calling_ae = str(primitive.calling_ae_title if primitive else "").strip() or "-"
            outcome = "released" if event.event is evt.EVT_RELEASED else "aborted"
            details = {**counts, "end": outcome}
            audit(f"ae:{calling_ae}", "gateway.c-store", f"dimse:{event.assoc.requestor.address}", details)


def audit(
    actor: str, action: str, target: str, details: dict[str, Any] | None = None, role: str = ""
) -> None:
    """Append to the platform's audit log; an audit failure is logged, it never breaks intake."""
    from sqlalchemy.exc import SQLAlchemyError

    from governance.audit import AuditError, record

    try:
        record(actor[:64], action, target[:255], details, role=role)
    except (AuditError, OSError, SQLAlchemyError) as exc:  # a database error included
        LOGGER.error("audit entry %s not written: %s", action, type(exc).__name__)


_Proposal = tuple[tuple[str, tuple[str, ...]], ...]  # (abstract syntax, transfer syntaxes) per context


def _proposal(assoc: Any) -> _Proposal:
    return tuple(
        (str(context.abstract_syntax), tuple(str(ts) for ts in context.transfer_syntax))
        for context in assoc.requestor.primitive.presentation_context_definition_list
    )


def _reordered(supported: tuple[Any, ...], proposal: _Proposal) -> list[Any]:
    """Accept, per context, the requestor's first proposed transfer syntax that we support.

    pynetdicom picks by the acceptor's order, which would make a sender transcode compressed
    files to Explicit VR (or fail: dcmtk cannot decode RLE or JPEG 2000 on the fly). Storing what
    the modality produced, unchanged, is what an archive should do.
    """
    proposed: dict[str, tuple[str, ...]] = {}
    for abstract_syntax, syntaxes in proposal:
        proposed.setdefault(abstract_syntax, syntaxes)
    contexts = []
    for context in supported:
        wanted = proposed.get(str(context.abstract_syntax))
        if wanted:
            ours = [str(ts) for ts in context.transfer_syntax]
            order = [ts for ts in wanted if ts in ours] + [ts for ts in ours if ts not in wanted]
            context = build_context(context.abstract_syntax, order)
        contexts.append(context)
    return contexts


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of group 0002 (short-length VRs)."""
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _uid_value(uid: str) -> bytes:
    value = uid.encode("ascii")
    return value + b"\0" if len(value) % 2 else value


def part10_bytes(event: evt.Event) -> bytes:
    """The received C-STORE data set as a Part 10 file, as pynetdicom's
    ``event.encoded_dataset(include_meta=True)`` builds it (same file meta, same bytes), without
    building and encoding a pydicom file meta dataset per instance."""
    request = cast(C_STORE, event.request)
    dataset = request.DataSet
    if not isinstance(dataset, BytesIO):
        return event.encoded_dataset(include_meta=True)  # not as received: pynetdicom's path
    version = PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    elements = b"".join(
        (
            struct.pack("<HH2sHL2s", 0x0002, 0x0001, b"OB", 0, 2, b"\0\1"),  # version 00 01
            _meta_element(0x0002, b"UI", _uid_value(str(request.AffectedSOPClassUID))),
            _meta_element(0x0003, b"UI", _uid_value(str(request.AffectedSOPInstanceUID))),
            _meta_element(0x0010, b"UI", _uid_value(str(event.context.transfer_syntax))),
            _meta_element(0x0012, b"UI", _uid_value(PYNETDICOM_IMPLEMENTATION_UID)),
            _meta_element(0x0013, b"SH", version + b" " if len(version) % 2 else version),
        )
    )
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(elements))
    return b"".join((b"\0" * 128, b"DICM", group_length, elements, dataset.getvalue()))


def _status_dataset(verdict: Verdict) -> Dataset:
    status = Dataset()
    status.Status = int(verdict.status)
    if not verdict.ok and verdict.comment:
        status.ErrorComment = verdict.comment
    return status
