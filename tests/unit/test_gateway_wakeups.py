"""The SCP's associations wake on events (socket data, a queued response, a DIMSE message)
instead of pynetdicom's 1 ms polling; what travels over them is unchanged."""

from __future__ import annotations

import hashlib
import threading
import time
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from imaging.gateway import AllowedPeer, DicomListener
from imaging.gateway.scp import StorageSCP
from imaging.gateway.wakeups import _MessageGate, _WakingSocket
from imaging.ingest import IngestOutcome, IngestStatus
from tests.dicom_factory import make_ct


class _Recording:
    """A sink that keeps what it received and the type of the association's socket."""

    def __init__(self) -> None:
        self.scp: StorageSCP | None = None
        self.received: list[bytes] = []
        self.socket_types: list[type] = []

    def ingest_bytes(self, data: bytes, source: str) -> IngestOutcome:
        assert self.scp is not None and self.scp._server is not None
        for assoc in self.scp._server.active_associations:
            self.socket_types.append(type(assoc.dul.socket))
        self.received.append(data)
        return IngestOutcome(IngestStatus.DEIDENTIFIED, hashlib.sha256(data).hexdigest())


def test_stores_over_many_pdus_as_part10_and_releases(radgate_home: Path) -> None:
    sink = _Recording()
    # A small maximum PDU: each instance arrives in many PDUs, each read by recv_into.
    listener = DicomListener(
        host="127.0.0.1", port=0, max_pdu=16384, allowed_peers=(AllowedPeer(ae_title="SENDER"),)
    )
    scp = StorageSCP(listener, sink)
    sink.scp = scp
    scp.start()
    try:
        sender = AE(ae_title="SENDER")
        sender.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        sender.add_requested_context(Verification)
        datasets = [make_ct(InstanceNumber=n) for n in range(3)]
        datasets[0].SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"  # odd length: padded
        datasets[1].SOPInstanceUID = "1.2.826.0.1.3680043.8.498.12"
        assoc = sender.associate("127.0.0.1", scp.port, ae_title=listener.ae_title)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        assert assoc.is_released
        deadline = time.monotonic() + 10
        while scp.active_associations() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scp.active_associations() == 0  # the acceptor noticed the release
    finally:
        scp.stop(5)
    assert sink.socket_types and set(sink.socket_types) == {_WakingSocket}
    assert len(sink.received) == len(datasets)
    for ds, data in zip(datasets, sink.received, strict=True):
        # The file meta, built by hand, is byte for byte pynetdicom's encoded_dataset() prefix.
        meta = create_file_meta(
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax=ExplicitVRLittleEndian,
        )
        assert data.startswith(b"\0" * 128 + b"DICM" + encode_file_meta(meta))
        got = dcmread(BytesIO(data))
        assert got.SOPInstanceUID == ds.SOPInstanceUID
        assert got.PixelData == ds.PixelData


def test_the_gate_pauses_like_the_event_it_replaces() -> None:
    import queue

    messages: queue.Queue[object] = queue.Queue()
    gate = _MessageGate(messages)
    assert gate.is_set()
    gate.clear()
    released = threading.Event()

    def reactor() -> None:
        gate.wait()
        released.set()

    thread = threading.Thread(target=reactor)
    thread.start()
    messages.put("message")  # a message does not get past a paused checkpoint
    assert not released.wait(0.2)
    gate.set()
    assert released.wait(10)
    thread.join(10)
    gate.wait()  # set, a message queued: returns at once
