"""Benchmark: C-STORE throughput of RadGate's gateway (with de-identification) vs Orthanc.

The same 512x512 CT instances (pydicom's real CT_small.dcm upsampled, fresh UIDs per phase) are
sent by dcmtk's ``storescu`` into Orthanc and into ``radgate gateway``, in the same run, with
``TCP_NODELAY=1`` for every peer:

1. one association (what a modality or a PACS routing rule does);
2. ``--concurrency`` associations at once (several senders).

The value is the ratio of files/s (gateway / Orthanc) over one association; target >= 1.0.
Then the same over DICOM TLS (``tls_ratio``, target >= 1.0; skipped with ``--no-tls``): a second
Orthanc with ``DicomTlsEnabled`` and a second gateway with ``dicom.tls``, both requiring a client
certificate from the CA of ``radgate certs dev``, receive the same kind of files from
``storescu +tls`` (dcmtk's default non-downgrading BCP 195 profile), in the same rounds.
Like for like: both targets get the same ``storescu`` options (``SCU_OPTIONS``) and receive
PDUs of the same size (Orthanc's ``MaximumPduLength`` is raised to storescu's largest send PDU,
131072 bytes; the gateway offers 1 MiB, of which storescu uses the same 131072), and both flush
each file before answering (Orthanc's ``SyncStorageArea: true``, the default since 1.7.4, set
explicitly; the gateway fsyncs object, folders and a synchronous=FULL catalog commit).
For attribution it also reports the SCP alone (the gateway's own SCP, with a sink that only
hashes) and the in-process cost of ``Ingestor.ingest_bytes`` per file, and the CPU time each
receiver spends per file over one association (``cpu_ratio`` = Orthanc's / the gateway's, the
figure that other load on the machine disturbs least). Ends with ONE JSON line: medians over
``--rounds`` (at least 7 by default) with their spread; exits 1 when a ratio misses 1.0.

    .venv/bin/python scripts/bench/gateway.py [--files 100] [--rounds 7] [--concurrency 4] [--no-tls]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _common import spread
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _orthanc_module() -> Any:
    spec = importlib.util.spec_from_file_location("radgate_ci_orthanc", REPO / "scripts/ci/orthanc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_ct(directory: Path, count: int, size: int = 512) -> list[Path]:
    directory.mkdir(parents=True)
    template = dcmread(str(get_testdata_file("CT_small.dcm")))
    pixels = template.pixel_array
    repeat = size // pixels.shape[0]
    template.PixelData = np.kron(pixels, np.ones((repeat, repeat), pixels.dtype)).tobytes()
    template.Rows = template.Columns = size
    study, series = generate_uid(), generate_uid()
    paths = []
    for index in range(count):
        ds = template.copy()
        ds.PatientID, ds.PatientName = f"BENCH-{index % 7}", "Bench^Patient"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        path = directory / f"{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


SCU_OPTIONS = ["--max-pdu", "131072"]  # storescu's receive PDU (its largest); same for both
ORTHANC_PDU = 131072  # what storescu sends to the gateway too (its largest send PDU)


def bench_orthanc(orthanc_ci: Any, workdir: Path) -> Any:
    """Orthanc as the tests run it, plus the like-for-like settings above."""

    class BenchOrthanc(orthanc_ci.OrthancServer):
        def config(self) -> dict[str, Any]:
            return {**super().config(), "SyncStorageArea": True, "MaximumPduLength": ORTHANC_PDU}

    return BenchOrthanc(workdir, modalities={"sender": ("STORESCU", "127.0.0.1", 1)})


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by the process ``pid`` and its live descendants
    (the gateway's worker processes): what the receiver spends, whatever the load around it."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def send(
    port: int,
    aec: str,
    files: list[Path],
    concurrency: int,
    env: dict[str, str],
    tls: list[str] | None = None,
) -> float:
    """Files/s for ``files`` split over ``concurrency`` storescu processes (one association each);
    ``tls``: storescu's TLS options."""
    chunks = [files[i::concurrency] for i in range(concurrency)]
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["storescu", *SCU_OPTIONS, *(tls or []), "-aet", "STORESCU", "-aec", aec, "127.0.0.1", str(port)]
            + [str(path) for path in chunk],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    for sender in senders:
        _, err = sender.communicate()
        if sender.returncode != 0:
            raise SystemExit(f"storescu into {aec} failed: {err.decode()[-500:]}")
    return len(files) / (time.perf_counter() - start)


def operator_token(env: dict[str, str]) -> str:
    """A token for ``radgate gateway`` (every command authenticates): the bench home's first
    user, an admin, created in a child process on that home."""
    code = "from governance.auth import add_user\nprint(add_user('bench-operator', 'admin', by=None).token)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def start_gateway(
    workdir: Path,
    env: dict[str, str],
    workers: int,
    tls: dict[str, Any] | None = None,
    acknowledge: str = "received",
) -> tuple[subprocess.Popen[str], int]:
    dicom: dict[str, Any] = {
        "ae_title": "RADGATE",
        "host": "127.0.0.1",
        "port": 0,
        "workers": workers,
        "allowed_peers": [{"ae_title": "STORESCU", "hosts": ["127.0.0.1"]}],
        "acknowledge": acknowledge,
    }
    if tls is not None:
        dicom["tls"] = tls
    config = {"dicom": dicom, "http": {"enabled": False}, "spool": {"drainers": 1}}
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("radgate")), "gateway", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(os.environ.get("RADGATE_BENCH_LOG", workdir / "gateway.log"), "ab"),  # noqa: SIM115
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        message = json.loads(line)
        if message.get("event") == "ready":
            return process, int(message["dicom_port"])
    raise SystemExit("the gateway did not start; see gateway.log")


def wait_drained(home: Path, timeout: float = 600) -> float:
    """Seconds until the gateway's receive spool under ``home`` is empty: every acknowledged
    instance de-identified and committed (an entry is removed only after its commit)."""
    spool = home / "spool"
    start = time.perf_counter()

    def filled() -> bool:  # empty slot files are made ahead; filled ones are entries
        for entry in os.scandir(spool):
            try:
                if entry.name.endswith(".spool") and entry.stat().st_size:
                    return True
            except FileNotFoundError:  # drained meanwhile
                continue
        return False

    while spool.exists() and filled():
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"the gateway's spool did not drain in {timeout} s")
        time.sleep(0.01)
    return time.perf_counter() - start


def transport_only(files: list[Path], env: dict[str, str]) -> float:
    """Files/s of the gateway's SCP (same code and settings) with a sink that only hashes:
    the DICOM transport's share of the cost, for attribution."""
    import hashlib

    from imaging.gateway import AllowedPeer, DicomListener
    from imaging.gateway.scp import StorageSCP
    from imaging.ingest import IngestOutcome, IngestStatus

    class HashOnly:
        def ingest_bytes(self, data: bytes, source: str, *, input_sha256: str | None = None) -> IngestOutcome:
            return IngestOutcome(IngestStatus.DUPLICATE, input_sha256 or hashlib.sha256(data).hexdigest())

    os.environ["RADGATE_HOME"] = env["RADGATE_HOME"]  # its audit entries go to the bench's home
    from governance.settings import get_settings

    get_settings.cache_clear()
    listener = DicomListener(host="127.0.0.1", port=0, allowed_peers=(AllowedPeer(ae_title="STORESCU"),))
    scp = StorageSCP(listener, HashOnly())
    scp.start()
    try:
        return send(scp.port, "RADGATE", files, 1, env)
    finally:
        scp.stop(10)


def ingest_only(files: list[Path], home: Path) -> float:
    """Milliseconds per file of ``Ingestor.ingest_bytes`` in-process (no network)."""
    os.environ["RADGATE_HOME"] = str(home)
    from governance.settings import get_settings

    get_settings.cache_clear()
    from imaging.ingest import Ingestor

    ingestor = Ingestor()
    data = [path.read_bytes() for path in files]
    ingestor.ingest_bytes(data[0], "bench")  # warm-up (catalog, profile)
    start = time.perf_counter()
    for item in data[1:]:
        ingestor.ingest_bytes(item, "bench")
    return 1000 * (time.perf_counter() - start) / max(1, len(data) - 1)


def count_instances(env: dict[str, str]) -> int:
    code = (
        "from sqlalchemy import func, select\n"
        "from governance.catalog import Instance, open_catalog\n"
        "with open_catalog().session() as s: print(s.scalar(select(func.count()).select_from(Instance)))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100, help="instances per send")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (medians reported)")
    parser.add_argument("--concurrency", type=int, default=4, help="associations in phase 2")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="gateway SCP processes (dicom.workers)"
    )
    parser.add_argument("--no-tls", action="store_true", help="skip the DICOM TLS comparison")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a ratio misses 1.0")
    args = parser.parse_args()

    orthanc_ci = _orthanc_module()
    with tempfile.TemporaryDirectory(prefix="radgate-bench-gateway-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "TCP_NODELAY": "1",
            "RADGATE_HOME": str(work / "home"),
            "RADGATE_PROJECT_KEY": os.environ.get("RADGATE_PROJECT_KEY", "5a" * 32),
        }
        env.pop("RADGATE_CATALOG_URL", None)
        env.pop("RADGATE_OBJECT_STORE", None)
        env["RADGATE_TOKEN"] = operator_token(env)
        # The TLS gateway has a home of its own (one catalog per running gateway).
        env_tls = {**env, "RADGATE_HOME": str(work / "home-tls")}
        env_tls["RADGATE_TOKEN"] = operator_token(env_tls)
        env_committed = {**env, "RADGATE_HOME": str(work / "home-committed")}
        env_committed["RADGATE_TOKEN"] = operator_token(env_committed)
        servers: list[Any] = []  # Orthancs and gateways to stop, whatever happens
        try:
            orthanc = bench_orthanc(orthanc_ci, work / "orthanc")
            orthanc.start()
            servers.append(orthanc)
            gateway, gateway_port = start_gateway(work, env, args.workers)
            servers.append(gateway)
            committed, committed_port = start_gateway(
                work / "gw-committed", env_committed, args.workers, acknowledge="committed"
            )
            servers.append(committed)
            targets: dict[str, tuple[int, str, list[str] | None]] = {
                "orthanc": (orthanc.dicom_port, orthanc.aet, None),
                "gateway": (gateway_port, "RADGATE", None),
                "gateway-committed": (committed_port, "RADGATE", None),
            }
            pids = {"orthanc": orthanc.process.pid, "gateway": gateway.pid}
            pids["gateway-committed"] = committed.pid
            homes = {"gateway": Path(env["RADGATE_HOME"])}  # received mode: wait for the drain
            if not args.no_tls:
                from governance.tls import make_dev_certificates

                certs = make_dev_certificates(work / "tls")
                server_tls = {
                    "certificate": str(certs.server_certificate),
                    "private_key": str(certs.server_key),
                    "ca_file": str(certs.ca_certificate),
                    "require_client_certificate": True,
                }
                orthanc_tls = bench_orthanc(orthanc_ci, work / "orthanc-tls")
                orthanc_tls.extra_config = {
                    "DicomTlsEnabled": True,
                    "DicomTlsCertificate": server_tls["certificate"],
                    "DicomTlsPrivateKey": server_tls["private_key"],
                    "DicomTlsTrustedCertificates": server_tls["ca_file"],
                    "DicomTlsRemoteCertificateRequired": True,
                }
                orthanc_tls.start()
                servers.append(orthanc_tls)
                gateway_tls, gateway_tls_port = start_gateway(
                    work / "gw-tls", env_tls, args.workers, server_tls
                )
                servers.append(gateway_tls)
                scu_tls = [
                    "+tls",
                    str(certs.client_key),
                    str(certs.client_certificate),
                    "+cf",
                    str(certs.ca_certificate),
                ]
                targets["orthanc-tls"] = (orthanc_tls.dicom_port, orthanc_tls.aet, scu_tls)
                targets["gateway-tls"] = (gateway_tls_port, "RADGATE", scu_tls)
                pids.update({"orthanc-tls": orthanc_tls.process.pid, "gateway-tls": gateway_tls.pid})
                homes["gateway-tls"] = Path(env_tls["RADGATE_HOME"])
        except BaseException:
            _stop_all(servers)
            raise
        rates: dict[tuple[str, int], list[float]] = {
            (name, concurrency): [] for name, concurrency in product(targets, (1, args.concurrency))
        }
        cpu_ms: dict[str, list[float]] = {name: [] for name in targets}  # per file, one association
        # Received mode: files/s from the first send to the last commit (spool drained).
        deidentified: dict[tuple[str, int], list[float]] = {key: [] for key in rates if key[0] in homes}
        try:
            # Rounds alternate the targets so that load from elsewhere hits both alike; every
            # send uses fresh instances (new UIDs), so nothing is a duplicate.
            for round_index in range(args.rounds):
                for concurrency in (1, args.concurrency):
                    for name, (port, aet, tls) in targets.items():
                        if tls is not None and concurrency != 1:
                            continue  # TLS: one association (the target figure)
                        files = write_ct(work / f"r{round_index}-{concurrency}-{name}", args.files)
                        used = cpu_seconds(pids[name])
                        rate = send(port, aet, files, concurrency, env, tls)
                        rates[name, concurrency].append(rate)
                        if name in homes:  # and its CPU below includes the drain
                            drain = wait_drained(homes[name])
                            deidentified[name, concurrency].append(len(files) / (len(files) / rate + drain))
                        if concurrency == 1:
                            cpu_ms[name].append(1000 * (cpu_seconds(pids[name]) - used) / len(files))
                        shutil.rmtree(files[0].parent)
            stored = count_instances(env)
            stored_committed = count_instances(env_committed)
            in_orthanc = len(orthanc.rest("GET", "/instances"))
            if not args.no_tls:
                stored_tls = count_instances(env_tls)
                in_orthanc_tls = len(orthanc_tls.rest("GET", "/instances"))
            transport = transport_only(write_ct(work / "transport", args.files), env)
            ingest_ms = ingest_only(write_ct(work / "ingest", min(args.files, 60)), work / "home-ingest")
        finally:
            _stop_all(servers)
        expected = 2 * args.rounds * args.files
        if stored != expected or in_orthanc != expected or stored_committed != expected:
            raise SystemExit(
                f"lost instances: gateway stored {stored} (committed mode {stored_committed}), "
                f"Orthanc {in_orthanc} of {expected}"
            )
        if not args.no_tls and not stored_tls == in_orthanc_tls == args.rounds * args.files:
            raise SystemExit(f"lost instances over TLS: gateway {stored_tls}, Orthanc {in_orthanc_tls}")
        med = {key: statistics.median(values) for key, values in rates.items() if values}
        gateway_serial, orthanc_serial = med["gateway", 1], med["orthanc", 1]
        gateway_conc, orthanc_conc = med["gateway", args.concurrency], med["orthanc", args.concurrency]
        print(
            f"one association:  gateway {gateway_serial:7.1f} files/s, Orthanc {orthanc_serial:7.1f} files/s"
        )
        print(
            f"{args.concurrency} associations:   gateway {gateway_conc:7.1f} files/s, "
            f"Orthanc {orthanc_conc:7.1f} files/s"
        )
        committed_serial = med["gateway-committed", 1]
        committed_conc = med["gateway-committed", args.concurrency]
        deid = {key: statistics.median(values) for key, values in deidentified.items() if values}
        print(
            f"answering after the commit (acknowledge: committed): {committed_serial:7.1f} files/s, "
            f"{args.concurrency} associations {committed_conc:7.1f}"
        )
        print(
            f"de-identified and committed (received mode, spool drained): "
            f"{deid['gateway', 1]:7.1f} files/s, {args.concurrency} associations "
            f"{deid['gateway', args.concurrency]:7.1f}"
        )
        cpu = {name: statistics.median(values) for name, values in cpu_ms.items()}
        print(
            f"CPU per file, one association: gateway {cpu['gateway']:.2f} ms, Orthanc {cpu['orthanc']:.2f} ms"
        )
        print(
            f"attribution: SCP with a hash-only sink {transport:7.1f} files/s; ingest {ingest_ms:.1f} ms/file"
        )
        tls_figures: dict[str, Any] = {}
        if not args.no_tls:
            gateway_tls_rate, orthanc_tls_rate = med["gateway-tls", 1], med["orthanc-tls", 1]
            print(
                f"one association over DICOM TLS: gateway {gateway_tls_rate:7.1f} files/s, "
                f"Orthanc {orthanc_tls_rate:7.1f} files/s"
            )
            tls_figures = {
                "tls_ratio": round(gateway_tls_rate / orthanc_tls_rate, 3),
                "tls_target": 1.0,
                "gateway_tls_files_per_s": round(gateway_tls_rate, 1),
                "orthanc_tls_files_per_s": round(orthanc_tls_rate, 1),
                "per_round_tls_ratios": [
                    round(g / o, 3)
                    for g, o in zip(rates["gateway-tls", 1], rates["orthanc-tls", 1], strict=True)
                ],
                "deidentified_tls_files_per_s": round(deid["gateway-tls", 1], 1),
                "gateway_tls_cpu_ms_per_file": round(statistics.median(cpu_ms["gateway-tls"]), 2),
                "orthanc_tls_cpu_ms_per_file": round(statistics.median(cpu_ms["orthanc-tls"]), 2),
                "tls": "mutual, storescu +tls (non-downgrading BCP 195), RSA 2048 dev CA",
            }
        result = {
            "bench": "gateway",
            "value": round(gateway_serial / orthanc_serial, 3),
            "target": 1.0,
            "better": "higher",
            "unit": (
                "ratio of C-STORE files/s, gateway (acknowledge: received, de-identifying from its "
                "spool) / Orthanc, one association"
            ),
            "acknowledge": "received",
            "scale_target": 1.5,
            "committed_ratio": round(committed_serial / orthanc_serial, 3),
            "committed_concurrent_ratio": round(committed_conc / orthanc_conc, 3),
            "deidentified_files_per_s": round(deid["gateway", 1], 1),
            "deidentified_concurrent_files_per_s": round(deid["gateway", args.concurrency], 1),
            "deidentified_ratio": round(deid["gateway", 1] / orthanc_serial, 3),
            "gateway_files_per_s": round(gateway_serial, 1),
            "orthanc_files_per_s": round(orthanc_serial, 1),
            "concurrent_associations": args.concurrency,
            "gateway_concurrent_files_per_s": round(gateway_conc, 1),
            "orthanc_concurrent_files_per_s": round(orthanc_conc, 1),
            "concurrent_ratio": round(gateway_conc / orthanc_conc, 3),
            "gateway_cpu_ms_per_file": round(cpu["gateway"], 2),
            "orthanc_cpu_ms_per_file": round(cpu["orthanc"], 2),
            "cpu_ratio": round(cpu["orthanc"] / cpu["gateway"], 3),
            "transport_only_files_per_s": round(transport, 1),
            "transport_only_ratio": round(transport / orthanc_serial, 3),
            "ingest_ms_per_file": round(ingest_ms, 1),
            "files_per_s_spread": {
                f"{name}_{concurrency}": spread(values, 1)
                for (name, concurrency), values in rates.items()
                if values
            },
            "files_per_phase": args.files,
            "rounds": args.rounds,
            "per_round_ratios": [
                round(g / o, 3) for g, o in zip(rates["gateway", 1], rates["orthanc", 1], strict=True)
            ],
            **tls_figures,
            "gateway_workers": args.workers,
            "image": "CT 512x512 16-bit, Explicit VR LE",
            "storescu_options": SCU_OPTIONS,
            "orthanc": {"SyncStorageArea": True, "MaximumPduLength": ORTHANC_PDU},
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
        }
        ratios = [result["value"], *([tls_figures["tls_ratio"]] if tls_figures else [])]
        result["met"] = all(ratio >= 1.0 for ratio in ratios)
        result["scale_met"] = min(result["value"], result["concurrent_ratio"]) >= result["scale_target"]
        print(json.dumps(result))
        if not result["met"] and not args.no_fail:
            raise SystemExit(1)


def _stop_all(servers: list[Any]) -> None:
    """Stop gateways (SIGTERM, drain) and Orthancs, in reverse order of start."""
    for server in reversed(servers):
        if isinstance(server, subprocess.Popen):
            server.terminate()
            try:
                server.wait(120)
            except subprocess.TimeoutExpired:
                server.kill()
        else:
            server.stop()


if __name__ == "__main__":
    main()
