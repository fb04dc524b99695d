"""The DIMSE side of the gateway: a Storage SCP (every storage SOP class, the common transfer
syntaxes) and Verification SCP, with an AE-title / host allow-list and TCP_NODELAY.

Associations are negotiated with pynetdicom's rules and served by ``upper_layer``: each
C-STORE is handed, still encoded, to the ingest sink from the association's own thread;
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
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

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
from pynetdicom import AllStoragePresentationContexts, _config, build_context, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from imaging.gateway.config import DicomListener
from imaging.gateway.peer_tls import PeerAdmission, listener_context
from imaging.gateway.sink import Sink
from imaging.gateway.status import StoreStatus, Verdict, verdict_for_error, verdict_for_outcome
from imaging.gateway.upper_layer import AssociationEnd, Rejection, StorageAssociation

if TYPE_CHECKING:
    from imaging.gateway.spool import Spool

__all__ = [
    "STORAGE_TRANSFER_SYNTAXES",
    "AcceptBalance",
    "GatewayStats",
    "PendingLimits",
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
    refused_connections: int = 0  # closed at once: too many connections not yet associated
    stored: int = 0
    failed: int = 0
    quarantined: int = 0
    spooled: int = 0  # acknowledged once durable in the receive spool (included in stored)
    spool_full: int = 0  # ingested in the association instead: the spool was at its limits
    drained: int = 0  # spool entries the drainers committed
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
                "refused_connections": self.refused_connections,
                "stored": self.stored,
                "failed": self.failed,
                "quarantined": self.quarantined,
                "spooled": self.spooled,
                "spool_full": self.spool_full,
                "drained": self.drained,
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


class PendingLimits:
    """Admission of connections that have not yet associated (thread-safe). Each admitted one
    holds a thread until its association is set up (or refused, or its ARTIM expires); the
    others are closed at once. ``max_pending`` for anyone, at most ``max_pending_per_host`` per
    peer address, and ``reserved`` more only for hosts the allow-list names."""

    def __init__(self, listener: DicomListener) -> None:
        self.listener = listener
        self._lock = threading.Lock()
        self._general = 0
        self._reserved = 0
        self._by_host: dict[str, int] = {}

    def admit(self, host: str) -> bool | None:
        """None: refuse; else whether the connection took a reserved slot."""
        listener = self.listener
        with self._lock:
            held = self._by_host.get(host, 0)
            if held >= listener.max_pending_per_host:
                return None
            if self._general < listener.max_pending:
                self._general += 1
                reserved = False
            elif self._reserved < listener.reserved_pending and listener.reserved_for(host):
                self._reserved += 1
                reserved = True
            else:
                return None
            self._by_host[host] = held + 1
            return reserved

    def release(self, host: str, reserved: bool) -> None:
        with self._lock:
            if reserved:
                self._reserved -= 1
            else:
                self._general -= 1
            held = self._by_host.pop(host, 1) - 1
            if held:
                self._by_host[host] = held

    def pending(self) -> int:
        with self._lock:
            return self._general + self._reserved


class _AssociationServer(socketserver.ThreadingTCPServer):
    """The listening socket; each connection is served in a thread of its own, with optional
    accept balancing between pre-forked processes."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64
    balance: AcceptBalance | None = None
    scp: StorageSCP

    def _handle_request_noblock(self) -> None:
        if self.balance is not None and self.balance.defer():
            time.sleep(0.002)  # the less busy worker is woken by the same connection
            return
        super()._handle_request_noblock()  # type: ignore[misc]

    def process_request(self, request: Any, client_address: Any) -> None:
        """In the accepting thread: a thread for the connection only if it is admitted."""
        host = str(client_address[0])
        accepted_at = time.monotonic()
        reserved = self.scp.pending.admit(host)
        if reserved is None:
            self.scp.stats.add(refused_connections=1)
            self.shutdown_request(request)
            return
        if self.balance is not None:
            self.balance.opened()  # counted before the next accept decision, not in the thread
        try:
            thread = threading.Thread(
                target=self._connection_thread,
                args=(request, host, reserved, accepted_at),
                name="association",
                daemon=True,
            )
            thread.start()
        except BaseException:
            self.scp.pending.release(host, reserved)
            if self.balance is not None:
                self.balance.closed()
            self.shutdown_request(request)
            raise

    def _connection_thread(self, request: Any, host: str, reserved: bool, accepted_at: float) -> None:
        try:
            self.scp._serve_connection(request, host, reserved, accepted_at)
        except Exception:  # the connection's own errors are handled there; keep the thread quiet
            LOGGER.exception("connection from %s failed", host)
        finally:
            self.shutdown_request(request)
            if self.balance is not None:
                self.balance.closed()


class StorageSCP:
    """The C-STORE / C-ECHO acceptor. ``start()`` returns once it listens; ``stop()`` drains.

    Association requests are negotiated with pynetdicom's presentation-context rules; each
    association then runs in ``imaging.gateway.upper_layer`` (see there why not pynetdicom's
    acceptor)."""

    def __init__(self, listener: DicomListener, sink: Sink, stats: GatewayStats | None = None) -> None:
        self.listener = listener
        self.sink = sink
        self.stats = stats or GatewayStats()
        self._server: _AssociationServer | None = None
        self._serving = False  # serve_forever started (shutdown() would wait forever otherwise)
        self._lock = threading.Lock()
        self._associations: set[StorageAssociation] = set()
        self._established = 0
        self.pending = PendingLimits(listener)
        # dicom.acknowledge: received -> answer once spooled (set by the service).
        self.spool: Spool | None = None
        self.admission = PeerAdmission(listener)
        self._tls = listener_context(listener)
        # Senders propose the same contexts on every association: the accepted list is built
        # once per proposal (some 15 ms of CPU each time otherwise).
        self._accepted = lru_cache(maxsize=64)(partial(_reordered, _supported_contexts()))

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the SCP is not running")
        return int(self._server.server_address[1])

    def bind(self) -> None:
        """Create the listening socket (no thread yet: worker processes fork after this)."""
        server = _AssociationServer((self.listener.host, self.listener.port), _NoHandler)
        server.scp = self
        self._server = server

    def balance_with(self, balance: AcceptBalance) -> None:
        """In a pre-forked worker: accept without waiting (another worker may have taken the
        connection) and leave connections to less busy workers."""
        if self._server is None:
            raise RuntimeError("bind() the SCP first")
        self._server.balance = balance
        self._server.socket.settimeout(0.0)

    def serve(self) -> None:
        """Accept associations in a background thread (each association gets its own thread)."""
        if self._server is None:
            raise RuntimeError("bind() the SCP first")
        threading.Thread(target=self._server.serve_forever, name="storage-scp", daemon=True).start()
        self._serving = True

    def start(self) -> None:
        self.bind()
        self.serve()

    def close_listener(self) -> None:
        """Close this process's copy of the listening socket (the workers keep theirs). Not
        ``server_close()`` before a fork: the workers share the socket."""
        if self._server is not None:
            self._server.socket.close()

    def active_associations(self) -> int:
        with self._lock:
            return len(self._associations)

    def stop(self, drain_timeout: float = 60.0) -> int:
        """Stop accepting, wait up to ``drain_timeout`` s for associations in flight, abort the
        rest. Returns how many had to be aborted."""
        server, self._server = self._server, None
        if server is None:
            return 0
        if self._serving:
            server.shutdown()  # leave serve_forever; no new associations
            self._serving = False
        server.server_close()
        deadline = time.monotonic() + drain_timeout
        while self.active_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            leftovers = list(self._associations)
        for association in leftovers:
            association.abort(from_other_thread=True)
        deadline = time.monotonic() + 5
        while self.active_associations() and time.monotonic() < deadline:
            time.sleep(0.01)  # their threads notice the closed socket and finish
        return len(leftovers)

    def _serve_connection(self, sock: socket.socket, host: str, reserved: bool, accepted_at: float) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener = self.listener
        released = False

        def setup_done() -> None:  # associated, rejected or given up: no longer pending
            nonlocal released
            if not released:
                released = True
                self.pending.release(host, reserved)

        association = StorageAssociation(
            sock,
            host,
            supported=self._supported_for,
            handlers=self,
            max_pdu=listener.max_pdu,
            max_instance_bytes=listener.max_instance_bytes,
            acse_timeout=listener.acse_timeout,
            network_timeout=listener.network_timeout,
            dimse_timeout=listener.dimse_timeout,
            max_association_bytes=listener.max_association_bytes,
            tls=self._tls,
            accepted_at=accepted_at,
            setup_done=setup_done,
        )
        with self._lock:
            self._associations.add(association)
        try:
            association.run()
        finally:
            setup_done()
            with self._lock:
                self._associations.discard(association)
                if association.established:
                    self._established -= 1

    def _supported_for(self, proposed: list[Any]) -> list[Any]:
        return list(self._accepted(_proposal(proposed)))

    # AssociationHandlers: called in the association's thread.

    def review(
        self, calling_ae: str, called_ae: str, host: str, certificates: tuple[bytes, ...] = ()
    ) -> Rejection | None:
        listener = self.listener
        refusal = self.admission.refusal(calling_ae, host, certificates)
        if refusal is not None:
            self.stats.add(rejected_associations=1)
            details: dict[str, Any] = {"reason": refusal.reason}
            if refusal.reason == "peer-certificate":
                # The fingerprint of what was shown tells the operator which certificate it was.
                details["certificate_sha256"] = refusal.certificate_sha256
                LOGGER.warning(
                    "association rejected: calling AE %r from %s did not show its own certificate "
                    "(shown: %s)",
                    calling_ae,
                    host,
                    refusal.certificate_sha256 or "none",
                )
                rejection = Rejection(0x01, 0x01, 0x01)  # permanent, service user, no reason given
            else:
                LOGGER.warning("association rejected: calling AE %r from %s not allowed", calling_ae, host)
                rejection = Rejection(0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
            audit(f"ae:{calling_ae or '-'}", "gateway.association-rejected", f"dimse:{host}", details)
            return rejection
        if listener.require_called_ae_title and called_ae != listener.ae_title:
            self.stats.add(rejected_associations=1)
            return Rejection(0x01, 0x01, 0x07)  # called AE title not recognised
        with self._lock:
            full = self._established >= listener.max_associations
            if not full:
                self._established += 1  # given back when the association ends
        if full:
            self.stats.add(rejected_associations=1)
            return Rejection(0x02, 0x03, 0x02)  # transient, local limit exceeded
        self.stats.add(associations=1)
        return None

    def store(self, data: bytes, digest: str, calling_ae: str, host: str) -> Verdict:
        source = f"c-store:{calling_ae}@{host}"
        if self.spool is not None:
            try:
                spooled = self.spool.put(data, digest, source)
            except Exception as exc:  # nothing acknowledged: the sender must retry
                LOGGER.error("C-STORE from %s not spooled: %s", calling_ae, type(exc).__name__)
                self.stats.add(failed=1)
                return verdict_for_error(exc)
            if spooled:
                self.stats.add(stored=1, spooled=1)
                return Verdict(StoreStatus.SUCCESS, "")
            self.stats.add(spool_full=1)  # over the spool's limits: ingest here, at its speed
        try:
            outcome = self.sink.ingest_bytes(data, source, input_sha256=digest)
            verdict = verdict_for_outcome(outcome)
        except Exception as exc:  # the sender must hear "not stored", whatever broke
            LOGGER.error("C-STORE from %s not stored: %s", calling_ae, type(exc).__name__)
            verdict = verdict_for_error(exc)
        else:
            if verdict.status is StoreStatus.CANNOT_UNDERSTAND:
                self.stats.add(quarantined=1)
        self.stats.add(stored=1) if verdict.ok else self.stats.add(failed=1)
        return verdict

    def closed(self, calling_ae: str, host: str, end: AssociationEnd, stored: int, failed: int) -> None:
        """One audit entry per association that stored something: who, from where, counts."""
        if stored or failed:
            details = {"stored": stored, "failed": failed, "end": end.value}
            audit(f"ae:{calling_ae or '-'}", "gateway.c-store", f"dimse:{host}", details)


class _NoHandler(socketserver.BaseRequestHandler):
    """Unused: ``_AssociationServer.finish_request`` serves each connection itself."""


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


def _proposal(proposed: list[Any]) -> _Proposal:
    return tuple(
        (str(context.abstract_syntax), tuple(str(ts) for ts in context.transfer_syntax))
        for context in proposed
    )


def _supported_contexts() -> tuple[Any, ...]:
    """Every storage SOP class with the transfer syntaxes above, and Verification."""
    contexts = [
        build_context(str(context.abstract_syntax), list(STORAGE_TRANSFER_SYNTAXES))
        for context in AllStoragePresentationContexts
    ]
    contexts.append(build_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    return tuple(contexts)


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
