"""The gateway's own association acceptor (``imaging.gateway.upper_layer``), against
pynetdicom as the requesting peer and against raw, malformed PDUs."""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from imaging.gateway import AllowedPeer, DicomListener
from imaging.gateway.scp import StorageSCP
from imaging.gateway.upper_layer import (
    ProtocolError,
    decode_command,
    encode_command,
    part10_prefix,
)
from imaging.ingest import IngestOutcome, IngestStatus
from tests.dicom_factory import make_ct
from tests.fuzz.fuzz_dimse import associate_rq


class _Recording:
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.digests: list[str | None] = []

    def ingest_bytes(self, data: bytes, source: str, *, input_sha256: str | None = None) -> IngestOutcome:
        self.received.append(data)
        self.digests.append(input_sha256)
        return IngestOutcome(IngestStatus.DEIDENTIFIED, hashlib.sha256(data).hexdigest())


@pytest.fixture
def scp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RADGATE_HOME", str(tmp_path / "home"))
    from governance.settings import get_settings

    get_settings.cache_clear()
    made: list[StorageSCP] = []

    def make(**listener: Any) -> StorageSCP:
        options = {"host": "127.0.0.1", "port": 0, "allowed_peers": (AllowedPeer(ae_title="SENDER"),)}
        server = StorageSCP(DicomListener(**{**options, **listener}), _Recording())
        server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop(2)
    get_settings.cache_clear()


def _sink(server: StorageSCP) -> _Recording:
    sink = server.sink
    assert isinstance(sink, _Recording)
    return sink


@pytest.mark.parametrize("instance_uid", ["1.2.3.4", "1.2.3.45"])  # odd and even lengths
def test_part10_prefix_is_pynetdicoms_file_meta(instance_uid: str) -> None:
    meta = create_file_meta(
        sop_class_uid=CTImageStorage,
        sop_instance_uid=UID(instance_uid),
        transfer_syntax=ExplicitVRLittleEndian,
    )
    expected = b"\0" * 128 + b"DICM" + encode_file_meta(meta)
    assert part10_prefix(str(CTImageStorage), instance_uid, str(ExplicitVRLittleEndian)) == expected


def test_command_round_trip_and_malformed_commands() -> None:
    raw = encode_command(
        [
            (0x0002, b"1.2.840.10008.5.1.4.1.1.2\0"),
            (0x0100, struct.pack("<H", 0x0001)),
            (0x0110, struct.pack("<H", 7)),
            (0x0800, struct.pack("<H", 0x0000)),
            (0x1000, b"1.2.3.4\0"),
        ]
    )
    command = decode_command(raw)
    assert (command.field, command.message_id, command.has_data_set) == (1, 7, True)
    assert command.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2" and command.sop_instance_uid == "1.2.3.4"
    with pytest.raises(ProtocolError):
        decode_command(raw[:-3])  # truncated value
    assert decode_command(raw[12:]).field == 1  # the group length is not needed
    with pytest.raises(ProtocolError):
        decode_command(encode_command([(0x0110, struct.pack("<H", 7))]))  # no command field
    with pytest.raises(ProtocolError):
        decode_command(struct.pack("<HHL", 0x0008, 0x0016, 0))  # not a command element


def test_echo_store_release_with_pynetdicom_as_peer(scp: Any) -> None:
    server = scp()
    closed: list[tuple[str, int, int]] = []
    digests: list[str] = []
    store, on_closed = server.store, server.closed

    def spy_store(data: bytes, digest: str, calling_ae: str, host: str) -> Any:
        digests.append(digest)
        return store(data, digest, calling_ae, host)

    def spy_closed(calling_ae: str, host: str, end: Any, stored: int, failed: int) -> None:
        closed.append((str(end), stored, failed))
        on_closed(calling_ae, host, end, stored, failed)

    server.store, server.closed = spy_store, spy_closed
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
    ds = make_ct()
    assoc = ae.associate("127.0.0.1", server.port, ae_title="RADGATE", max_pdu=16384)  # many PDUs
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    status = assoc.send_c_store(ds)
    assert status.Status == 0x0000
    assoc.release()
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == [("released", 1, 0)]
    (data,) = _sink(server).received
    assert digests == _sink(server).digests == [hashlib.sha256(data).hexdigest()]
    received = dcmread(BytesIO(data))
    assert received.SOPInstanceUID == ds.SOPInstanceUID
    assert received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian  # the requestor's first
    assert received.PixelData == ds.PixelData
    assert server.stats.snapshot()["stored"] == 1


def test_too_large_instance_is_refused_not_buffered(scp: Any) -> None:
    server = scp(max_instance_bytes=256)  # make_ct() is about 1.5 KB
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="RADGATE")
    status = assoc.send_c_store(make_ct())
    assoc.release()
    assert status.Status == 0xA700
    assert _sink(server).received == []


def _exchange(port: int, *messages: bytes) -> list[int]:
    """Send ``messages`` in order; the types of the PDUs the SCP answered until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for message in messages:
            sock.sendall(message)
            time.sleep(0.05)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    types, offset = [], 0
    while offset + 6 <= len(received):
        types.append(received[offset])
        offset += 6 + struct.unpack_from(">L", received, offset + 2)[0]
    return types


def _pdata(context_id: int, control: int, payload: bytes) -> bytes:
    item = struct.pack(">LBB", len(payload) + 2, context_id, control) + payload
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


def test_malformed_input_is_aborted_and_the_scp_keeps_serving(scp: Any) -> None:
    server = scp()
    rq = associate_rq([build_context(Verification)])
    assert _exchange(server.port, b"\x09\x00\x00\x00\x00\x02zz") == [0x07]  # unknown PDU type
    assert _exchange(server.port, rq[:6] + b"\x00" * (len(rq) - 6)) == [0x07]  # garbage RQ body
    assert _exchange(server.port, rq, _pdata(99, 0x03, b"x")) == [0x02, 0x07]  # unknown context
    find = encode_command([(0x0100, struct.pack("<H", 0x0020)), (0x0110, b"\1\0"), (0x0800, b"\1\1")])
    assert _exchange(server.port, rq, _pdata(1, 0x03, find)) == [0x02, 0x07]  # C-FIND: not served
    assert _exchange(server.port, rq, _pdata(1, 0x03, b"\0\0\0\0\4\0\0\0")) == [0x02, 0x07]  # bad cmd
    assert _exchange(server.port, associate_rq([build_context(Verification)], "STRANGER")) == [0x03]
    echo = encode_command(
        [(0x0002, b"1.2.840.10008.1.1\0"), (0x0100, b"\x30\0"), (0x0110, b"\1\0"), (0x0800, b"\1\1")]
    )
    release = struct.pack(">BBLL", 0x05, 0, 4, 0)
    assert _exchange(server.port, rq, _pdata(1, 0x03, echo), release) == [0x02, 0x04, 0x06]
    assert _sink(server).received == []


def test_stop_aborts_what_does_not_drain(scp: Any) -> None:
    server = scp()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(associate_rq([build_context(CTImageStorage)]))
    assert sock.recv(1)[:1] == b"\x02"  # accepted; the peer now goes quiet mid-association
    time.sleep(0.1)
    assert server.active_associations() == 1
    stopper = threading.Thread(target=lambda: setattr(server, "aborted", server.stop(0.2)))
    stopper.start()
    stopper.join(10)
    assert getattr(server, "aborted", None) == 1
    assert server.active_associations() == 0
    sock.close()


def test_a_peer_silent_mid_message_is_aborted(scp: Any) -> None:
    server = scp(dimse_timeout=0.3)
    closed: list[str] = []
    on_closed = server.closed

    def spy_closed(calling_ae: str, host: str, end: Any, stored: int, failed: int) -> None:
        closed.append(str(end))
        on_closed(calling_ae, host, end, stored, failed)

    server.closed = spy_closed
    store = encode_command(
        [
            (0x0002, b"1.2.840.10008.5.1.4.1.1.2\0"),
            (0x0100, b"\1\0"),
            (0x0110, b"\1\0"),
            (0x0800, b"\0\0"),
            (0x1000, b"1.2.3.4\0"),
        ]
    )
    rq = associate_rq([build_context(CTImageStorage)])
    # The command arrives, its data set never does: A-ABORT once the DIMSE timeout has passed.
    assert _exchange(server.port, rq, _pdata(1, 0x03, store)) == [0x02, 0x07]
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == ["aborted"]
    assert _sink(server).received == []


def test_stop_of_a_bound_scp_that_never_served(tmp_path: Path) -> None:
    listener = DicomListener(host="127.0.0.1", port=0, allowed_peers=(AllowedPeer(ae_title="SENDER"),))
    server = StorageSCP(listener, _Recording())
    server.bind()
    done = threading.Event()

    def stop() -> None:
        server.stop(1)
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    assert done.wait(10)  # socketserver's shutdown() alone would wait for serve_forever forever
