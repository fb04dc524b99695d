#!/usr/bin/env python3
"""atheris fuzz target: the gateway's association acceptor (``imaging.gateway.upper_layer``)
must end every conversation cleanly (A-ABORT, rejection or release), whatever the peer sends:
no exception may reach its catch-all, and nothing malformed may reach the sink.

    python tests/fuzz/fuzz_dimse.py -max_total_time=600   # by hand, for minutes
The test suite runs it briefly (tests/unit/test_fuzz_dimse.py). Seed: a real conversation
(A-ASSOCIATE-RQ, C-ECHO, C-STORE of a small CT, A-RELEASE-RQ) as pynetdicom would send it.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
import threading
from typing import Any

from pynetdicom import AllStoragePresentationContexts
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]


class CatchAllReached(AssertionError):
    """A conversation ended in the acceptor's last-resort handler (a bug)."""


class Recorder:
    """Association handlers that accept everything and keep what was stored."""

    def __init__(self) -> None:
        self.stored: list[tuple[bytes, str]] = []
        self.ends: list[str] = []

    def review(self, calling_ae: str, called_ae: str, host: str, certificates: tuple[bytes, ...] = ()) -> Any:
        return None

    def store(self, data: bytes, digest: str, calling_ae: str, host: str) -> Any:
        from imaging.gateway.status import StoreStatus, Verdict

        self.stored.append((data, digest))
        return Verdict(StoreStatus.SUCCESS, "")

    def closed(self, calling_ae: str, host: str, end: Any, stored: int, failed: int) -> None:
        self.ends.append(str(end))


class _Tripwire(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            raise CatchAllReached(record.getMessage())


def _supported(proposed: list[Any]) -> list[Any]:
    contexts = [build_context(str(c.abstract_syntax)) for c in AllStoragePresentationContexts]
    return [*contexts, build_context(Verification)]


def converse(stream: bytes, max_instance_bytes: int = 1 << 20) -> Recorder:
    """Run one acceptor over a socket pair whose peer sends ``stream`` and then closes."""
    from imaging.gateway import upper_layer

    ours, peer = socket.socketpair()
    recorder = Recorder()
    association = upper_layer.StorageAssociation(
        ours,
        "127.0.0.1",
        supported=_supported,
        handlers=recorder,
        max_pdu=65536,
        max_instance_bytes=max_instance_bytes,
        acse_timeout=5,
        network_timeout=5,
        dimse_timeout=5,
    )

    def feed() -> None:
        try:
            peer.sendall(stream)
            peer.shutdown(socket.SHUT_WR)
            while peer.recv(65536):  # drain the answers until the acceptor closes
                pass
        except OSError:
            pass
        finally:
            peer.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    tripwire = _Tripwire()
    upper_layer.LOGGER.addHandler(tripwire)
    try:
        association.run()  # returns; the tripwire raises if the catch-all was reached
    finally:
        upper_layer.LOGGER.removeHandler(tripwire)
    feeder.join(10)
    for data, digest in recorder.stored:
        import hashlib

        assert hashlib.sha256(data).hexdigest() == digest and data[128:132] == b"DICM"
    return recorder


def _pdata(context_id: int, control: int, payload: bytes, max_fragment: int = 16000) -> bytes:
    out = b""
    pieces = [payload[i : i + max_fragment] for i in range(0, len(payload), max_fragment)] or [b""]
    for index, piece in enumerate(pieces):
        last = 0x02 if index == len(pieces) - 1 else 0
        item = struct.pack(">LBB", len(piece) + 2, context_id, (control & 1) | last) + piece
        out += struct.pack(">BBL", 0x04, 0, len(item)) + item
    return out


def associate_rq(contexts: list[Any], calling: str = "SENDER") -> bytes:
    """An encoded A-ASSOCIATE-RQ to RADGATE proposing ``contexts`` (ids 1, 3, 5...)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = calling, "RADGATE"
    for index, context in enumerate(contexts):
        context.context_id = 2 * index + 1
    primitive.presentation_context_definition_list = contexts
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    primitive.user_information = [length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def seed_conversation() -> bytes:
    """A-ASSOCIATE-RQ (Verification on 1, CT on 3), C-ECHO, C-STORE, A-RELEASE-RQ."""
    from imaging.gateway.upper_layer import encode_command
    from tests.dicom_factory import make_ct

    rq = associate_rq([build_context(Verification), build_context(CTImageStorage)])
    ds = make_ct()
    encoded = encode(ds, True, True)  # the data set alone, implicit VR little endian
    assert encoded is not None
    echo = encode_command(
        [(0x0002, b"1.2.840.10008.1.1\0"), (0x0100, b"\x30\0"), (0x0110, b"\1\0"), (0x0800, b"\1\1")]
    )
    uid = str(ds.SOPInstanceUID).encode()
    store = encode_command(
        [
            (0x0002, b"1.2.840.10008.5.1.4.1.1.2\0"),
            (0x0100, b"\1\0"),
            (0x0110, b"\2\0"),
            (0x0700, b"\0\0"),
            (0x0800, b"\0\0"),
            (0x1000, uid + b"\0" if len(uid) % 2 else uid),
        ]
    )
    return b"".join(
        (
            rq,
            _pdata(1, 0x01, echo),
            _pdata(3, 0x01, store),
            _pdata(3, 0x00, encoded, 700),
            struct.pack(">BBLL", 0x05, 0, 4, 0),
        )
    )


def test_one_input(data: bytes) -> None:
    converse(data, max_instance_bytes=4096)


def main() -> None:
    import atheris

    with atheris.instrument_imports():
        import imaging.gateway.upper_layer  # noqa: F401  (coverage-guided where it matters)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
