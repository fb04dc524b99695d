"""Denial of service against the gateway's DICOM acceptor, tried as an attacker would, with real
sockets against a real ``radgate gateway`` process:

- 500 connections that send 6 bytes of an A-ASSOCIATE-RQ announcing its longest allowed body,
  then hang, from one address and spread over 250 addresses;
- a slowloris: an association request, or a PDU of an established association, trickled one
  byte at a time, each byte well within the idle timeout;
- a PDU announcing 4 GiB on an association whose PDU size is unlimited.

Through all of it a legitimate peer on the allow-list (pynetdicom, 127.0.0.1) still gets its
C-ECHO and C-STORE answered with success, and the gateway's threads and peak memory (VmHWM, read
from /proc) stay within bounds that do not grow with the number of attacking sockets. Attackers
use other loopback addresses (127.0.0.0/8 all reach the host) so that limits per peer address can
be seen at work.

``-m slow`` repeats the waves for minutes while the legitimate peer keeps storing, and prints
the ceilings observed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread

from tests.integration.conftest import gateway_config, write_ct_series

pytestmark = pytest.mark.integration

ATTACKERS = 500
# Connections not yet associated that the gateway admits (its defaults) and what a gateway
# process runs besides them (accept loop, signal loop, sink, logging, the sampler's margin).
MAX_PENDING, PER_HOST, RESERVED = 32, 8, 8
MEMORY_MARGIN = 96 * 1024**2  # bytes the peak RSS may rise during an attack


def _status(pid: int) -> dict[str, int]:
    """Threads, VmRSS and VmHWM (bytes) of a process."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "Threads":
            values["threads"] = int(value)
        elif name in ("VmRSS", "VmHWM", "RssAnon"):
            values[name] = int(value.split()[0]) * 1024
    return values


class Sampler:
    """Polls a process's thread count and RSS in the background; keeps the maxima."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_threads = 0
        self.max_rss = 0
        self.max_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                status = _status(self.pid)
                self.max_threads = max(self.max_threads, status["threads"])
                self.max_rss = max(self.max_rss, status["VmRSS"])
                self.max_anon = max(self.max_anon, status["RssAnon"])
            self._stop.wait(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _config(**dicom: Any) -> dict[str, Any]:
    config = gateway_config(http={"enabled": False})
    config["dicom"].update({"acse_timeout": 2, "network_timeout": 5, "dimse_timeout": 3, **dicom})
    return config


def _associate_rq_header(length: int) -> bytes:
    return struct.pack(">BBL", 0x01, 0, length)


def _attack_sockets(port: int, count: int, sources: list[str], payload: bytes) -> list[socket.socket]:
    """``count`` connections, round robin over ``sources``, each sending ``payload`` and then
    nothing. A connection the gateway closes at once may fail while sending: that is the point."""
    sockets = []
    for index in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((sources[index % len(sources)], 0))
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(payload)
        except OSError:
            pass
        sockets.append(sock)
    return sockets


@contextlib.contextmanager
def _held(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _legitimate_peer(port: int, files: list[Path]) -> tuple[int, list[int]]:
    """C-ECHO and C-STORE from the allow-listed STORESCU at 127.0.0.1 (pynetdicom): the echo
    status and each store's status (-1: no association; -2: no response, e.g. the association
    aborted or a DIMSE timeout: pynetdicom then returns an empty data set)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADGATE")
    if not assoc.is_established:
        return -1, [-1] * len(files)
    try:
        echo = assoc.send_c_echo()
        stores = [int(assoc.send_c_store(dcmread(path)).get("Status", -2)) for path in files]
        return int(echo.get("Status", -2)), stores
    finally:
        assoc.release()


@pytest.fixture
def ct_files(tmp_path: Path) -> list[Path]:
    return write_ct_series(tmp_path / "ct", 2)


def _baseline(gateway: Any) -> dict[str, int]:
    ok, _ = _legitimate_peer(gateway.dicom_port, [])
    assert ok == 0  # warm: the first association builds the accepted contexts
    time.sleep(0.5)
    return _status(gateway.process.pid)


@pytest.mark.parametrize("spread", [False, True], ids=["one-address", "250-addresses"])
def test_idle_connections_leave_room_for_the_pacs(
    start_gateway: Any, ct_files: list[Path], spread: bool
) -> None:
    gateway = start_gateway(_config())
    before = _baseline(gateway)
    sources = [f"127.0.2.{1 + i}" for i in range(250)] if spread else ["127.0.0.2"]
    # 1 MiB - 1: the longest A-ASSOCIATE-RQ the gateway reads; then silence.
    attack = _associate_rq_header((1 << 20) - 1)
    with (
        Sampler(gateway.process.pid) as sampler,
        _held(_attack_sockets(gateway.dicom_port, ATTACKERS, sources, attack)),
    ):
        time.sleep(0.5)
        echo, stores = _legitimate_peer(gateway.dicom_port, ct_files)
        time.sleep(0.5)
    assert echo == 0
    assert stores == [0] * len(ct_files)
    pending_bound = MAX_PENDING + RESERVED if spread else PER_HOST
    # besides the attackers' pending slots: the legitimate association's thread, one still
    # closing from the warm-up, and helper threads the ingest path starts on first use (a
    # bound that does not grow with the 500 attackers, which is the point)
    assert sampler.max_threads <= before["threads"] + pending_bound + 4, sampler.max_threads
    after = _status(gateway.process.pid)
    assert after["VmHWM"] - before["VmRSS"] < MEMORY_MARGIN, (before, after)
    print(
        json.dumps(
            {
                "attack": "idle",
                "spread": spread,
                "max_threads": sampler.max_threads,
                "threads_before": before["threads"],
                "peak_rss_mib": after["VmHWM"] >> 20,
                "rss_before_mib": before["VmRSS"] >> 20,
            }
        )
    )


def _trickle(
    port: int, source: str, prefix: bytes, data: bytes, interval: float, give_up: float
) -> float | None:
    """Send ``prefix``, then ``data`` one byte every ``interval`` s; the seconds until the
    gateway closed the connection, or None if it was still open after ``give_up`` s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    started = time.monotonic()
    try:
        sock.sendall(prefix)
        for byte in data:
            if time.monotonic() - started > give_up:
                return None
            sock.settimeout(interval)
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except OSError:
                return time.monotonic() - started
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return time.monotonic() - started
        return None
    finally:
        sock.close()


def _associate_rq(calling: str = "STORESCU") -> bytes:
    """An A-ASSOCIATE-RQ to RADGATE proposing Verification (context 1)."""
    from pynetdicom import build_context
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from tests.fuzz.fuzz_dimse import associate_rq

    return associate_rq([build_context(Verification)], calling=calling)


def test_slowloris_association_request_is_cut_at_its_deadline(
    start_gateway: Any, ct_files: list[Path]
) -> None:
    """A request trickled one byte every 0.3 s (the idle timeout is 5 s, ARTIM 2 s) is dropped
    long before it is complete, even when it pads itself to take a minute."""
    gateway = start_gateway(_config())
    request = _associate_rq()
    padded = request[:2] + struct.pack(">L", len(request) - 6 + 200) + request[6:] + b"\0" * 200
    closed_after = _trickle(gateway.dicom_port, "127.0.0.3", b"", padded, 0.3, give_up=60)
    assert closed_after is not None, "a trickling sender kept its connection for a minute"
    echo, stores = _legitimate_peer(gateway.dicom_port, ct_files[:1])
    assert (echo, stores) == (0, [0])


def test_slowloris_pdu_on_an_association_is_cut_at_its_deadline(
    start_gateway: Any, ct_files: list[Path]
) -> None:
    """An allowed peer that associates and then trickles a P-DATA-TF PDU (one byte per 0.3 s,
    idle timeout 5 s, DIMSE/PDU timeout 3 s) is aborted, not kept forever."""
    gateway = start_gateway(_config())
    sock = socket.create_connection(("127.0.0.1", gateway.dicom_port))
    try:
        sock.sendall(_associate_rq())
        sock.settimeout(10)
        reply = sock.recv(65536)
        assert reply[:1] == b"\x02", "association not accepted"
        pdu = struct.pack(">BBL", 0x04, 0, 1000) + b"\0" * 1000
        started = time.monotonic()
        closed_after = None
        for byte in pdu:
            if time.monotonic() - started > 60:
                break
            sock.settimeout(0.3)
            try:
                if sock.recv(65536)[:1] in (b"", b"\x07"):  # closed or A-ABORT
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                pass
            except OSError:
                closed_after = time.monotonic() - started
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - started
                break
    finally:
        sock.close()
    assert closed_after is not None, "a PDU trickled for a minute kept its association"
    echo, stores = _legitimate_peer(gateway.dicom_port, ct_files[:1])
    assert (echo, stores) == (0, [0])


def test_four_gib_pdu_announcement_allocates_nothing(start_gateway: Any, ct_files: list[Path]) -> None:
    """With an unlimited PDU size (max_pdu 0) and large instances allowed, an associated peer
    announces a 4 GiB P-DATA-TF and send nothing more; before association, a 4 GiB
    A-ASSOCIATE-RQ. Memory stays where it was; the legitimate peer is served meanwhile."""
    gateway = start_gateway(_config(max_pdu=0, max_instance_bytes=8 * 1024**3))
    before = _baseline(gateway)
    held = []
    with Sampler(gateway.process.pid):
        for _ in range(1):  # one is enough: more would take 4 GiB each from a shared machine
            sock = socket.create_connection(("127.0.0.1", gateway.dicom_port))
            sock.sendall(_associate_rq())
            sock.settimeout(10)
            assert sock.recv(65536)[:1] == b"\x02"
            sock.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + b"\0\0\0\x02\x01\x00")
            held.append(sock)
        pre = _attack_sockets(gateway.dicom_port, 4, ["127.0.0.4"], _associate_rq_header(0xFFFFFFFF))
        with _held(held + pre):
            time.sleep(1.0)
            echo, stores = _legitimate_peer(gateway.dicom_port, ct_files)
    assert (echo, stores) == (0, [0] * len(ct_files))
    after = _status(gateway.process.pid)
    assert after["VmHWM"] - before["VmRSS"] < MEMORY_MARGIN, (before, after)


def test_large_stow_request_is_spooled_not_held(start_gateway: Any) -> None:
    """A 240 MiB STOW-RS request (six 40 MiB parts, refused as not DICOM): the body goes to an
    unlinked temporary file, each part is in memory only while it is ingested. Anonymous memory
    (file pages of the spool are not counted: the kernel may drop them) stays far below the
    body's size, where holding it (chunks, joined body, parts) took three times the body."""
    from governance.testing import cast_token
    from imaging.gateway.multipart import build_related

    gateway = start_gateway(gateway_config(dicom={"allowed_peers": []}))
    part = b"NOT DICOM! " * (40 * 1024 * 1024 // 11)
    body, content_type = build_related([part] * 6)
    del part
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {cast_token('pacs-client')}"}
    before = _status(gateway.process.pid)
    with Sampler(gateway.process.pid) as sampler:
        reply = httpx.post(f"{gateway.stow_url}/studies", content=body, headers=headers, timeout=300)
    assert reply.status_code == 409  # none stored: six quarantined parts
    assert len(reply.json()["00081198"]["Value"]) == 6
    grown = sampler.max_anon - before["RssAnon"]
    print(json.dumps({"stow_body_mib": len(body) >> 20, "peak_anon_growth_mib": grown >> 20}))
    assert grown < 160 * 1024**2, grown >> 20


def store_file(port: int, path: Path, sop_class: str, transfer_syntax: str) -> Any:
    """C-STORE one file as it is (pynetdicom reads it in chunks, never decodes it) over a fresh
    association from the allow-listed STORESCU; the response status dataset."""
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="STORESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(sop_class, [transfer_syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="RADGATE")
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


def _large_document(path: Path, size: int) -> Path:
    """An Encapsulated PDF Storage instance carrying ``size`` bytes (a real header, a document
    the ingest path refuses to keep): what matters here is how the SCP holds it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "BIG-1", "Big^Document", "DOC"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF" + b"\0" * (size - 4)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def test_large_instance_is_held_once(start_gateway: Any, tmp_path: Path) -> None:
    """A 256 MiB instance over one association: past 64 MiB the data set goes to an unlinked
    temporary file as it arrives and is read back once for the ingest path; held as PDU
    buffers and then joined it took one copy more. Measured: about 4x the instance in
    anonymous memory before (transport 2x, then the ingest path quarantining it), 3x now; the
    bound sits between."""
    size = 256 * 1024**2
    path = _large_document(tmp_path / "big.dcm", size)
    gateway = start_gateway(gateway_config(http={"enabled": False}))
    before = _status(gateway.process.pid)
    with Sampler(gateway.process.pid) as sampler:
        status = store_file(gateway.dicom_port, path, "1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.1.2.1")
    assert "Status" in status  # answered (stored or refused by the ingest path's rules)
    grown = sampler.max_anon - before["RssAnon"]
    print(
        json.dumps(
            {"instance_mib": size >> 20, "status": int(status.Status), "peak_anon_growth_mib": grown >> 20}
        )
    )
    assert grown < int(3.5 * size), grown >> 20


@pytest.mark.slow
def test_dos_waves_for_minutes(start_gateway: Any, tmp_path: Path) -> None:
    """Waves of 500 idle connections (one address, then 250), slowloris senders and 4 GiB
    announcements for ``RADGATE_DOS_SECONDS`` (default 180) while a legitimate peer stores
    continuously: every one of its stores succeeds; the ceilings are printed."""
    duration = float(os.environ.get("RADGATE_DOS_SECONDS", "180"))
    files = write_ct_series(tmp_path / "load", 4)
    gateway = start_gateway(_config(max_pdu=0, max_instance_bytes=8 * 1024**3))
    before = _baseline(gateway)
    failures: list[Any] = []
    stores_done = 0
    stop = threading.Event()

    def legitimate() -> None:
        nonlocal stores_done
        while not stop.is_set():
            try:
                echo, stores = _legitimate_peer(gateway.dicom_port, files)
            except Exception as exc:  # counted, not lost in a dying thread
                failures.append(repr(exc))
                continue
            if echo != 0 or any(s != 0 for s in stores):
                failures.append((time.monotonic(), echo, stores))
            stores_done += len(stores)

    def slowloris(source: str) -> None:
        while not stop.is_set():
            _trickle(gateway.dicom_port, source, b"", _associate_rq() + b"\0" * 100, 0.2, give_up=30)

    threads = [threading.Thread(target=legitimate, daemon=True)]
    threads += [threading.Thread(target=slowloris, args=(f"127.0.0.{5 + i}",), daemon=True) for i in range(4)]
    waves = 0
    with Sampler(gateway.process.pid) as sampler:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            spread = waves % 2 == 1
            sources = [f"127.0.1.{i}" for i in range(1, 251)] if spread else ["127.0.0.2"]
            with _held(
                _attack_sockets(gateway.dicom_port, ATTACKERS, sources, _associate_rq_header(0xFFFFF))
            ):
                time.sleep(3)
            waves += 1
        stop.set()
        for thread in threads:
            thread.join(60)
    after = _status(gateway.process.pid)
    report = {
        "seconds": duration,
        "waves": waves,
        "legitimate_stores": stores_done,
        "threads_before": before["threads"],
        "max_threads": sampler.max_threads,
        "rss_before_mib": before["VmRSS"] >> 20,
        "peak_rss_mib": after["VmHWM"] >> 20,
    }
    print(json.dumps(report))
    assert not failures, failures[:3]
    assert stores_done > 0
    assert sampler.max_threads <= before["threads"] + MAX_PENDING + RESERVED + 32 + 2
    assert after["VmHWM"] - before["VmRSS"] < MEMORY_MARGIN * 2, report
