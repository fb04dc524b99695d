"""The acceptor side of one DICOM association (PS3.8 upper layer, PS3.7 DIMSE) for the Storage
and Verification SCP, in the association's own thread.

pynetdicom decodes the A-ASSOCIATE-RQ and encodes the A-ASSOCIATE-AC/-RJ (its PDU classes) and
negotiates the presentation contexts (``negotiate_as_acceptor``); what follows is handled here,
on a blocking socket: P-DATA-TF PDUs are read straight into one buffer each, the data set's
fragments are kept as views of those buffers and hashed as they arrive (while the sender is
still sending the next PDU), and the C-STORE response goes out on the same thread. pynetdicom's
own acceptor runs two threads per association that hand every PDU and message over queues and
copies each fragment several times: on a 512 KiB image that cost more than the rest of the
transport together.

A C-STORE response is sent only after the sink has returned (the instance is durable and
recorded) and carries its verdict. Anything the peer sends that this SCP does not serve (other
DIMSE services, malformed PDUs or command sets) ends the association with an A-ABORT; nothing
received is ever logged (identifiers stay out of logs).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from imaging.gateway.status import StoreStatus, Verdict

__all__ = [
    "APPLICATION_CONTEXT",
    "AssociationEnd",
    "AssociationHandlers",
    "Command",
    "ProtocolError",
    "Rejection",
    "StorageAssociation",
    "decode_command",
    "encode_command",
    "part10_prefix",
    "verified_chain",
]

LOGGER = logging.getLogger(__name__)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
_MAX_ASSOCIATE_RQ = 1 << 20  # an A-ASSOCIATE-RQ with every storage SOP class is ~100 KB
_MAX_COMMAND = 1 << 16  # a command set is a few hundred bytes
# A PDU body is read into a buffer this large first, grown (doubling) only as bytes arrive.
_FIRST_ALLOCATION = 256 * 1024
# A data set larger than this is spooled to disk while it arrives.
_SPOOL_BYTES = 64 * 1024 * 1024
_DEADLINE_SLACK = 0.5  # seconds a read may overshoot its deadline (the socket timeout is coarse)


class PduType(enum.IntEnum):
    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


class CommandField(enum.IntEnum):
    """The DIMSE-C commands this SCP serves (PS3.7 E.1)."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030


class AbortReason(enum.IntEnum):
    """A-ABORT provider reasons (PS3.8 9.3.8)."""

    NOT_SPECIFIED = 0x00
    UNRECOGNIZED_PDU = 0x01
    UNEXPECTED_PDU = 0x02
    INVALID_PARAMETER = 0x06


_NO_DATA_SET = 0x0101


class ProtocolError(Exception):
    """The peer broke the protocol; the association is aborted with ``reason``."""

    def __init__(self, message: str, reason: AbortReason = AbortReason.NOT_SPECIFIED) -> None:
        super().__init__(message)
        self.reason = reason


class _TlsRefused(Exception):
    """The TLS handshake failed (a plaintext client, an untrusted certificate...)."""


class _PeerGone(Exception):
    """The peer closed the connection, or went quiet past the timeout (``timed_out``)."""

    def __init__(self, timed_out: bool = False) -> None:
        super().__init__("timed out" if timed_out else "connection closed")
        self.timed_out = timed_out


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ: result, source, diagnostic (PS3.8 9.3.4)."""

    result: int
    source: int
    diagnostic: int


class AssociationEnd(enum.StrEnum):
    RELEASED = "released"
    ABORTED = "aborted"


@dataclass
class Command:
    """The fields of a command set this SCP reads (implicit VR little endian, group 0000)."""

    field: int
    message_id: int
    has_data_set: bool
    sop_class_uid: str = ""
    sop_instance_uid: str = ""


class AssociationHandlers(Protocol):
    """What the SCP decides: who may associate, what each instance's verdict is."""

    def review(
        self, calling_ae: str, called_ae: str, host: str, certificates: tuple[bytes, ...] = ()
    ) -> Rejection | None:
        """None to accept the association request. ``certificates``: the peer's chain as the
        TLS handshake verified it (leaf first, DER); empty without TLS or a client certificate."""
        ...

    def store(self, data: bytes, digest: str, calling_ae: str, host: str) -> Verdict:
        """Store one received instance (a Part 10 file whose sha256 is ``digest``)."""
        ...

    def closed(self, calling_ae: str, host: str, end: AssociationEnd, stored: int, failed: int) -> None: ...


def verified_chain(sock: ssl.SSLSocket) -> tuple[bytes, ...]:
    """The peer's chain as the handshake verified it (leaf first, trust anchor last; DER);
    empty when the peer showed no certificate. Python 3.13 has ``get_verified_chain`` on the
    socket; before, the same call exists on its ``_sslobj``."""
    getter = getattr(sock, "get_verified_chain", None)
    if getter is None:
        getter = getattr(getattr(sock, "_sslobj", None), "get_verified_chain", None)
    if getter is None:
        raise RuntimeError("this Python's ssl module does not report the verified peer chain")
    der = ssl._ssl.ENCODING_DER  # type: ignore[attr-defined]
    return tuple(cert if isinstance(cert, bytes) else cert.public_bytes(der) for cert in getter() or ())


def _uid_value(uid: str) -> bytes:
    value = uid.encode("ascii")
    return value + b"\0" if len(value) % 2 else value


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of group 0002 (short-length VRs)."""
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def part10_prefix(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and the file meta group for a received data set: the bytes
    pynetdicom's ``event.encoded_dataset(include_meta=True)`` writes before the data set, so an
    instance received by either path hashes the same (duplicates are found by that hash)."""
    version = PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    elements = b"".join(
        (
            struct.pack("<HH2sHL2s", 0x0002, 0x0001, b"OB", 0, 2, b"\0\1"),  # version 00 01
            _meta_element(0x0002, b"UI", _uid_value(sop_class_uid)),
            _meta_element(0x0003, b"UI", _uid_value(sop_instance_uid)),
            _meta_element(0x0010, b"UI", _uid_value(transfer_syntax)),
            _meta_element(0x0012, b"UI", _uid_value(PYNETDICOM_IMPLEMENTATION_UID)),
            _meta_element(0x0013, b"SH", version + b" " if len(version) % 2 else version),
        )
    )
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(elements))
    return b"".join((b"\0" * 128, b"DICM", group_length, elements))


def _uid(raw: bytes) -> str:
    try:
        return raw.rstrip(b"\0 ").decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("a command UID is not ASCII", AbortReason.INVALID_PARAMETER) from exc


def decode_command(raw: bytes | bytearray | memoryview) -> Command:
    """The command set's fields this SCP needs; raises ``ProtocolError`` if it is malformed."""
    values: dict[int, bytes] = {}
    view = memoryview(raw)
    offset, end = 0, len(view)
    while offset < end:
        if end - offset < 8:
            raise ProtocolError("truncated command element", AbortReason.INVALID_PARAMETER)
        group, element, length = struct.unpack_from("<HHL", view, offset)
        offset += 8
        if group != 0x0000 or length > end - offset:
            raise ProtocolError("malformed command set", AbortReason.INVALID_PARAMETER)
        values[element] = bytes(view[offset : offset + length])
        offset += length

    def us(element: int) -> int:
        value = values.get(element)
        if value is None or len(value) != 2:
            raise ProtocolError(
                f"command element (0000,{element:04X}) missing", AbortReason.INVALID_PARAMETER
            )
        return int(struct.unpack("<H", value)[0])

    return Command(
        field=us(0x0100),
        message_id=us(0x0110),
        has_data_set=us(0x0800) != _NO_DATA_SET,
        sop_class_uid=_uid(values.get(0x0002, b"")),
        sop_instance_uid=_uid(values.get(0x1000, b"")),
    )


def encode_command(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set (implicit VR little endian), its group length first; ``elements`` are
    (element number, encoded value) in ascending order."""
    body = b"".join(struct.pack("<HHL", 0x0000, element, len(value)) + value for element, value in elements)
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


def _response(request: Command, field: CommandField, status: int, sop_class: str, comment: str = "") -> bytes:
    elements = [
        (0x0002, _uid_value(sop_class)),
        (0x0100, struct.pack("<H", field)),
        (0x0120, struct.pack("<H", request.message_id)),
        (0x0800, struct.pack("<H", _NO_DATA_SET)),
        (0x0900, struct.pack("<H", status)),
    ]
    if comment:
        text = comment[:64].encode("ascii", "replace")
        elements.append((0x0902, text + b" " if len(text) % 2 else text))
    if request.sop_instance_uid and field is CommandField.C_STORE_RSP:
        elements.append((0x1000, _uid_value(request.sop_instance_uid)))
    return encode_command(elements)


@dataclass
class _Transfer:
    """The data set of the C-STORE in progress: its fragments (views of the received PDUs),
    hashed as they arrive; past ``_SPOOL_BYTES`` written to an unlinked temporary file instead
    (nothing is left behind, even after a crash), so that a large instance is held once, when
    it is handed to the sink, not twice; over the size limit, the rest is read and dropped."""

    command: Command
    context_id: int
    prefix: bytes
    hasher: Any
    limit: int
    fragments: list[memoryview] = field(default_factory=list)
    size: int = 0
    too_large: bool = False
    spool: Any = None

    def add(self, fragment: memoryview) -> None:
        self.size += len(fragment)
        if self.size > self.limit:
            self.too_large = True
            self.fragments.clear()
            self.close()
            return
        self.hasher.update(fragment)
        if self.spool is None and self.size > _SPOOL_BYTES:
            self.spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed by part10 or close)
            self.spool.write(self.prefix)
            for held in self.fragments:
                self.spool.write(held)
            self.fragments.clear()
        if self.spool is not None:
            self.spool.write(fragment)
        else:
            self.fragments.append(fragment)

    def part10(self) -> bytes:
        if self.spool is not None:
            self.spool.seek(0)
            data: bytes = self.spool.read()  # one buffer of the final size
            self.close()
            return data
        data = b"".join((self.prefix, *self.fragments))
        self.fragments.clear()
        return data

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class StorageAssociation:
    """One accepted TCP connection, from A-ASSOCIATE-RQ to release or abort (``run``)."""

    def __init__(
        self,
        sock: socket.socket,
        host: str,
        *,
        supported: Callable[[list[PresentationContext]], list[PresentationContext]],
        handlers: AssociationHandlers,
        max_pdu: int,
        max_instance_bytes: int,
        acse_timeout: float,
        network_timeout: float,
        dimse_timeout: float,
        pdu_timeout: float | None = None,
        max_association_bytes: int = 0,
        tls: ssl.SSLContext | None = None,
        accepted_at: float | None = None,
        setup_done: Callable[[], None] | None = None,
    ) -> None:
        self.sock: socket.socket = sock
        self.host = host
        self.supported = supported
        self.handlers = handlers
        self.max_pdu = max_pdu
        self.max_instance_bytes = max_instance_bytes
        self.acse_timeout = acse_timeout
        self.network_timeout = network_timeout
        self.dimse_timeout = dimse_timeout
        # A PDU, once its first byte is in, must be complete within this (no trickling).
        self.pdu_timeout = pdu_timeout or dimse_timeout
        self.max_association_bytes = max_association_bytes  # 0: no ceiling
        self.tls = tls
        # ARTIM: TLS handshake and A-ASSOCIATE-RQ are due this long after the accept.
        self.setup_deadline = (accepted_at or time.monotonic()) + acse_timeout
        self.setup_done = setup_done
        self.received = 0
        self._timeout: float | None = None
        self.calling_ae = ""
        self.certificates: tuple[bytes, ...] = ()  # the peer's verified chain (TLS)
        self.contexts: dict[int, tuple[str, str]] = {}  # accepted id: (abstract, transfer syntax)
        self.stored = self.failed = 0
        self.established = False
        self._send_lock = threading.Lock()

    # -- the socket

    def _recv_into(self, view: memoryview, deadline: float) -> int:
        """One read into ``view``, given up at ``deadline`` (within ``_DEADLINE_SLACK``). The
        socket's timeout is only lowered when it would overshoot by more than the slack, and a
        read that times out before the deadline is retried, so the timeout is rarely touched."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _PeerGone(timed_out=True)
            if self._timeout is None or self._timeout > remaining + _DEADLINE_SLACK:
                self._wait_at_most(remaining)
            try:
                got = self.sock.recv_into(view, len(view))
            except TimeoutError:
                continue
            except OSError as exc:
                raise _PeerGone() from exc
            if not got:
                raise _PeerGone()
            return got

    def _read_into(self, buffer: bytearray, start: int, deadline: float) -> None:
        """Fill ``buffer`` from ``start``; every byte is due by ``deadline`` (a peer that
        trickles bytes cannot push it back)."""
        view = memoryview(buffer)
        try:
            read = start
            while read < len(buffer):
                read += self._recv_into(view[read:], deadline)
        finally:
            view.release()

    def _read_body(self, length: int, deadline: float) -> bytearray:
        """``length`` bytes, the buffer grown as they arrive (doubling from
        ``_FIRST_ALLOCATION``): a length announced and then not sent costs nothing."""
        buffer = bytearray(min(length, _FIRST_ALLOCATION))
        self._read_into(buffer, 0, deadline)
        while len(buffer) < length:
            filled = len(buffer)
            buffer.extend(bytes(min(filled, length - filled)))
            self._read_into(buffer, filled, deadline)
        return buffer

    def _read_pdu(self, limit: int, idle: float, deadline: float | None = None) -> tuple[int, bytearray]:
        """The next PDU: its first byte within ``idle`` seconds, all of it within
        ``pdu_timeout`` of that (or by ``deadline`` when that is sooner)."""
        header = bytearray(6)
        view = memoryview(header)
        try:
            first_due = time.monotonic() + idle
            if deadline is not None:
                first_due = min(first_due, deadline)
            got = self._recv_into(view, first_due)
        finally:
            view.release()
        due = time.monotonic() + self.pdu_timeout
        if deadline is not None:
            due = min(due, deadline)
        if got < 6:
            self._read_into(header, got, due)
        pdu_type, length = header[0], struct.unpack_from(">L", header, 2)[0]
        if pdu_type not in PduType._value2member_map_:
            raise ProtocolError("unrecognised PDU", AbortReason.UNRECOGNIZED_PDU)
        if length > limit:
            raise ProtocolError("PDU longer than negotiated", AbortReason.INVALID_PARAMETER)
        self.received += 6 + length
        if self.max_association_bytes and self.received > self.max_association_bytes:
            raise ProtocolError("association exceeds the bytes one association may carry")
        return pdu_type, self._read_body(length, due)

    def _wait_at_most(self, seconds: float) -> None:
        """The read timeout; the socket is only touched when it changes."""
        if seconds != self._timeout:
            self.sock.settimeout(seconds)
            self._timeout = seconds

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def abort(
        self, reason: AbortReason = AbortReason.NOT_SPECIFIED, *, from_other_thread: bool = False
    ) -> None:
        """Send an A-ABORT (service provider) and close the connection. From another thread
        over TLS only the connection is shut down: one TLS session is not written from two
        threads at once."""
        if not (from_other_thread and isinstance(self.sock, ssl.SSLSocket)):
            with contextlib.suppress(OSError, ValueError):
                self._send(struct.pack(">BBLBBBB", PduType.A_ABORT, 0, 4, 0, 0, 2, reason))
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    # -- the association

    def run(self) -> None:
        end = AssociationEnd.ABORTED
        try:
            if self.tls is not None:
                self._handshake(self.tls)
            accepted = self._associate()
            self._end_setup()
            if accepted:
                end = self._serve()
        except _TlsRefused as exc:
            LOGGER.warning("TLS connection from %s refused: %s", self.host, exc)
        except ProtocolError as exc:
            LOGGER.warning("association from %s aborted: %s", self.host, exc)
            self.abort(exc.reason)
        except _PeerGone as exc:
            if exc.timed_out:
                self.abort()
        except Exception:  # never let a bug leave the peer hanging
            LOGGER.exception("association from %s failed", self.host)
            self.abort()
        finally:
            self._end_setup()
            if self.established:
                self.handlers.closed(self.calling_ae, self.host, end, self.stored, self.failed)
            with contextlib.suppress(OSError):
                self.sock.close()

    def _end_setup(self) -> None:
        if self.setup_done is not None:
            done, self.setup_done = self.setup_done, None
            done()

    def _handshake(self, context: ssl.SSLContext) -> None:
        """The TLS handshake, within the association setup deadline."""
        remaining = self.setup_deadline - time.monotonic()
        if remaining <= 0:
            raise _PeerGone(timed_out=True)
        self.sock.settimeout(remaining)
        try:
            self.sock = context.wrap_socket(self.sock, server_side=True)
        except TimeoutError as exc:
            raise _TlsRefused("handshake timed out") from exc
        except ssl.SSLError as exc:
            raise _TlsRefused(str(exc.reason or type(exc).__name__)) from exc
        except OSError as exc:
            raise _PeerGone() from exc
        self._timeout = remaining
        if isinstance(self.sock, ssl.SSLSocket):
            self.certificates = verified_chain(self.sock)

    def _associate(self) -> bool:
        pdu_type, body = self._read_pdu(
            _MAX_ASSOCIATE_RQ, self.setup_deadline - time.monotonic(), self.setup_deadline
        )
        if pdu_type != PduType.A_ASSOCIATE_RQ:
            raise ProtocolError("expected A-ASSOCIATE-RQ", AbortReason.UNEXPECTED_PDU)
        pdu = A_ASSOCIATE_RQ()
        try:
            pdu.decode(bytes([pdu_type, 0]) + struct.pack(">L", len(body)) + bytes(body))
            request = pdu.to_primitive()
        except Exception as exc:  # pynetdicom raises several kinds on malformed items
            raise ProtocolError("malformed A-ASSOCIATE-RQ", AbortReason.INVALID_PARAMETER) from exc
        self.calling_ae = str(request.calling_ae_title or "").strip()
        called_ae = str(request.called_ae_title or "").strip()
        rejection: Rejection | None
        if not pdu.protocol_version & 1:
            rejection = Rejection(0x01, 0x02, 0x02)  # protocol version not supported
        elif str(request.application_context_name) != APPLICATION_CONTEXT:
            rejection = Rejection(0x01, 0x01, 0x02)  # application context name not supported
        else:
            rejection = self.handlers.review(self.calling_ae, called_ae, self.host, self.certificates)
        if rejection is not None:
            self._reject(request, rejection)
            return False
        self.established = True  # the handlers counted it: ``closed`` follows, whatever happens
        self._accept(request)
        return True

    def _reject(self, request: A_ASSOCIATE, rejection: Rejection) -> None:
        primitive = A_ASSOCIATE()
        primitive.result, primitive.result_source, primitive.diagnostic = (
            rejection.result,
            rejection.source,
            rejection.diagnostic,
        )
        pdu = A_ASSOCIATE_RJ()
        pdu.from_primitive(primitive)
        self._send(pdu.encode())
        # Let the peer read the rejection before the connection closes.
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(1.0)
            while self.sock.recv(4096):
                pass
        except OSError:
            pass

    def _accept(self, request: A_ASSOCIATE) -> None:
        roles: dict[Any, tuple[bool | None, bool | None]] = {}
        window_asked = False
        for item in request.user_information:
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid:
                roles[item.sop_class_uid] = (item.scu_role, item.scp_role)
            elif isinstance(item, AsynchronousOperationsWindowNegotiation):
                window_asked = True
        proposed = list(request.presentation_context_definition_list)
        try:
            results, role_items = negotiate_as_acceptor(proposed, self.supported(proposed), roles)
        except (TypeError, ValueError, AttributeError) as exc:  # e.g. a context without its syntax
            raise ProtocolError("malformed presentation context", AbortReason.INVALID_PARAMETER) from exc
        self.contexts = {
            int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in results
            if cx.result == 0x00 and cx.context_id is not None
        }
        primitive = A_ASSOCIATE()
        primitive.application_context_name = APPLICATION_CONTEXT
        primitive.calling_ae_title = request.calling_ae_title
        primitive.called_ae_title = request.called_ae_title
        primitive.result, primitive.result_source = 0x00, 0x01
        primitive.presentation_context_definition_results_list = results
        length = MaximumLengthNotification()
        length.maximum_length_received = self.max_pdu
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        information: list[Any] = [length, implementation, version, *role_items]
        if window_asked:
            window = AsynchronousOperationsWindowNegotiation()  # one operation at a time
            window.maximum_number_operations_invoked = 1
            window.maximum_number_operations_performed = 1
            information.append(window)
        primitive.user_information = information
        pdu = A_ASSOCIATE_AC()
        pdu.from_primitive(primitive)
        self._send(pdu.encode())

    def _serve(self) -> AssociationEnd:
        # What we told the peer; unlimited (0) is still bounded by what an instance may hold.
        limit = self.max_pdu or min((1 << 32) - 1, self.max_instance_bytes + _MAX_COMMAND)
        command = bytearray()
        request: Command | None = None
        transfer: _Transfer | None = None
        while True:
            # Between messages the peer may think (network timeout); within one, the rest of
            # the message is due (DIMSE timeout).
            busy = request is not None or bool(command)
            pdu_type, body = self._read_pdu(
                max(limit, _MAX_COMMAND), self.dimse_timeout if busy else self.network_timeout
            )
            if pdu_type == PduType.A_RELEASE_RQ:
                if request is not None:
                    raise ProtocolError("release during a message", AbortReason.UNEXPECTED_PDU)
                self._send(struct.pack(">BBLL", PduType.A_RELEASE_RP, 0, 4, 0))
                return AssociationEnd.RELEASED
            if pdu_type == PduType.A_ABORT:
                return AssociationEnd.ABORTED
            if pdu_type != PduType.P_DATA_TF:
                raise ProtocolError("unexpected PDU", AbortReason.UNEXPECTED_PDU)
            view = memoryview(body)
            offset = 0
            while offset < len(view):
                if len(view) - offset < 6:
                    raise ProtocolError("truncated PDV item", AbortReason.INVALID_PARAMETER)
                item_length, context_id, control = struct.unpack_from(">LBB", view, offset)
                if item_length < 2 or item_length > len(view) - offset - 4:
                    raise ProtocolError("malformed PDV item", AbortReason.INVALID_PARAMETER)
                fragment = view[offset + 6 : offset + 4 + item_length]
                offset += 4 + item_length
                if context_id not in self.contexts:
                    raise ProtocolError("PDV on a context not accepted", AbortReason.INVALID_PARAMETER)
                is_command, is_last = bool(control & 1), bool(control & 2)
                if is_command:
                    if request is not None:
                        raise ProtocolError("command fragment during a data set", AbortReason.UNEXPECTED_PDU)
                    command += fragment
                    if len(command) > _MAX_COMMAND:
                        raise ProtocolError("command set too long", AbortReason.INVALID_PARAMETER)
                    if is_last:
                        request = decode_command(command)
                        command = bytearray()
                        transfer = self._begin(request, context_id)
                        if transfer is None:
                            request = None  # answered (no data set follows)
                    continue
                if transfer is None or context_id != transfer.context_id:
                    raise ProtocolError("data fragment without its command", AbortReason.UNEXPECTED_PDU)
                transfer.add(fragment)
                if is_last:
                    self._finish(transfer)
                    request = transfer = None

    def _begin(self, request: Command, context_id: int) -> _Transfer | None:
        """Act on a complete command set; a C-STORE returns its transfer (the data set follows)."""
        abstract_syntax, transfer_syntax = self.contexts[context_id]
        if request.field == CommandField.C_ECHO_RQ:
            if request.has_data_set:
                raise ProtocolError("C-ECHO with a data set", AbortReason.INVALID_PARAMETER)
            self._send_command(context_id, _response(request, CommandField.C_ECHO_RSP, 0x0000, VERIFICATION))
            return None
        if request.field != CommandField.C_STORE_RQ:
            raise ProtocolError(f"DIMSE command 0x{request.field:04X} is not served here")
        if not request.has_data_set or not request.sop_instance_uid:
            raise ProtocolError(
                "C-STORE without a data set or an instance UID", AbortReason.INVALID_PARAMETER
            )
        sop_class = request.sop_class_uid or abstract_syntax
        prefix = part10_prefix(sop_class, request.sop_instance_uid, transfer_syntax)
        return _Transfer(request, context_id, prefix, hashlib.sha256(prefix), self.max_instance_bytes)

    def _finish(self, transfer: _Transfer) -> None:
        request = transfer.command
        sop_class = request.sop_class_uid or self.contexts[transfer.context_id][0]
        if transfer.too_large:
            verdict = Verdict(StoreStatus.OUT_OF_RESOURCES, "instance larger than the gateway accepts")
        else:
            data = transfer.part10()
            verdict = self.handlers.store(data, transfer.hasher.hexdigest(), self.calling_ae, self.host)
        if verdict.ok:
            self.stored += 1
        else:
            self.failed += 1
        status = int(verdict.status)
        comment = "" if verdict.ok else verdict.comment
        self._send_command(
            transfer.context_id, _response(request, CommandField.C_STORE_RSP, status, sop_class, comment)
        )

    def _send_command(self, context_id: int, command: bytes) -> None:
        """One P-DATA-TF with the whole command set (a response fits any negotiated PDU)."""
        item = struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command
        self._send(struct.pack(">BBL", PduType.P_DATA_TF, 0, len(item)) + item)
