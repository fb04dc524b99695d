"""Integration fixtures: real services on 127.0.0.1 (append your own below; keep them generic).

Orthanc: one per session (``orthanc``), started by ``scripts/ci/orthanc.py`` with free ports,
``RemoteAccessAllowed: false``, an HTTP user, known AE titles and ``TCP_NODELAY=1``; the
function-scoped ``clean_orthanc`` empties it for a test. ``dicom_env`` is the environment for
dcmtk tools (``TCP_NODELAY=1``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_script(relative: str, name: str) -> ModuleType:
    """Import a helper from ``scripts/`` (not a package) by path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


orthanc_ci = load_script("scripts/ci/orthanc.py", "radgate_ci_orthanc")


pg_ci = load_script("scripts/ci/postgres.py", "radgate_ci_postgres")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Any]:
    """A private PostgreSQL 15 cluster on 127.0.0.1 for the module's tests. PostgreSQL is part of
    the test environment (scripts/ci/install-apt.sh): missing binaries fail the test."""
    assert pg_ci.find_bindir() is not None, (
        "PostgreSQL 15 server binaries are missing (apt-get install postgresql-15)"
    )
    workdir = pg_ci.scratch_dir()
    cluster = pg_ci.PostgresCluster(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def dicom_env() -> dict[str, str]:
    return dict(orthanc_ci.dicom_env())


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running Orthanc (``OrthancServer``: ``url``, ``dicomweb_url``, ``aet``, ``dicom_port``,
    ``user``, ``password``, ``rest()``, ``upload()``, ``add_modality()``, ``clear()``).

    Peers it knows from the start: ``STORESCU``, ``FINDSCU``, ``RADGATE`` (port updated with
    ``add_modality`` once a gateway listens)."""
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed (scripts/ci/install-apt.sh)")
    server = orthanc_ci.OrthancServer(
        tmp_path_factory.mktemp("orthanc"),
        modalities={
            "storescu": ("STORESCU", "127.0.0.1", 1),
            "findscu": ("FINDSCU", "127.0.0.1", 1),
            "radgate": ("RADGATE", "127.0.0.1", 11112),
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clean_orthanc(orthanc: Any) -> Iterator[Any]:
    orthanc.clear()
    yield orthanc
    orthanc.clear()


@pytest.fixture
def orthanc_credentials_env(orthanc: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Orthanc's HTTP user in ``RADGATE_PACS_ORTHANC_USER`` / ``..._PASSWORD`` (what the
    gateway configs of the tests name)."""
    monkeypatch.setenv("RADGATE_PACS_ORTHANC_USER", orthanc.user)
    monkeypatch.setenv("RADGATE_PACS_ORTHANC_PASSWORD", orthanc.password)
    return {k: v for k, v in os.environ.items() if k.startswith("RADGATE_PACS_ORTHANC_")}


# --- RadGate gateway (`radgate gateway`) as a real process -------------------------------------


class GatewayProcess:
    """A ``radgate gateway`` subprocess; ``ready`` is its start-up JSON line (bound ports)."""

    def __init__(self, config_path: Path, env: dict[str, str], timeout: float = 90.0) -> None:
        import json
        import queue
        import subprocess
        import threading
        import time

        self.config_path = config_path
        self.terminating = False
        self.lines: queue.Queue[str] = queue.Queue()
        radgate = Path(sys.executable).with_name("radgate")
        self.process = subprocess.Popen(
            [str(radgate), "gateway", "--config", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=open(config_path.with_suffix(".log"), "ab"),  # noqa: SIM115 (closed with the process)
            env=env,
            text=True,
        )
        stdout = self.process.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                self.lines.put(line)

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        self.ready: dict[str, Any] = {}
        while not self.ready:
            if self.process.poll() is not None:
                log = config_path.with_suffix(".log").read_text()[-2000:]
                raise RuntimeError(f"gateway exited with {self.process.returncode}: {log}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("gateway did not become ready")
            try:
                message = json.loads(self.lines.get(timeout=0.5))
            except (queue.Empty, ValueError):
                continue
            if message.get("event") == "ready":
                self.ready = message

    @property
    def dicom_port(self) -> int:
        return int(self.ready["dicom_port"])

    @property
    def http_port(self) -> int:
        return int(self.ready["http_port"])

    @property
    def ae_title(self) -> str:
        return str(self.ready["ae_title"])

    @property
    def stow_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicomweb"

    def terminate(self, timeout: float = 60.0) -> dict[str, Any]:
        """SIGTERM (drain) and the final counters it printed."""
        import json
        import queue

        if self.process.poll() is None and not self.terminating:
            self.terminate_nowait()
        self.process.wait(timeout)
        self._pump.join(timeout)  # stdout at EOF: every line is queued
        final: dict[str, Any] = {}
        while True:
            try:
                message = json.loads(self.lines.get_nowait())
            except queue.Empty:
                break
            except ValueError:
                continue
            if message.get("event") == "stopped":
                final = message
                break
        return final

    def terminate_nowait(self) -> None:
        """Send SIGTERM once (a second one during interpreter exit would kill it)."""
        self.terminating = True
        self.process.terminate()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def gateway_config(orthanc: Any | None = None, **overrides: Any) -> dict[str, Any]:
    """A gateway configuration for tests: loopback, free ports, known test AE titles."""
    config: dict[str, Any] = {
        "dicom": {
            "ae_title": "RADGATE",
            "host": "127.0.0.1",
            "port": 0,
            "allowed_peers": [
                {"ae_title": "ORTHANC", "hosts": ["127.0.0.1"]},
                {"ae_title": "STORESCU", "hosts": ["127.0.0.1"]},
                {"ae_title": "RGTEST", "hosts": ["127.0.0.1"]},
                {"ae_title": "FARAWAY", "hosts": ["10.9.8.0/24"]},
            ],
        },
        "http": {"host": "127.0.0.1", "port": 0},
        "drain_timeout": 30,
        "stale_temp_age": 0,
    }
    if orthanc is not None:
        config["pacs"] = [
            {
                "name": "orthanc",
                "ae_title": orthanc.aet,
                "host": "127.0.0.1",
                "port": orthanc.dicom_port,
                "dicomweb_url": orthanc.dicomweb_url,
                "username_env": "RADGATE_PACS_ORTHANC_USER",
                "password_env": "RADGATE_PACS_ORTHANC_PASSWORD",
            }
        ]
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture
def start_gateway(tmp_path: Path, radgate_home: Path, as_role: Any) -> Iterator[Any]:
    """Factory: ``start_gateway(config_dict) -> GatewayProcess`` sharing the test's RADGATE_HOME,
    run as a data steward unless the test chose a token; every gateway still running at the end
    is killed."""
    import yaml

    started: list[GatewayProcess] = []

    def start(config: dict[str, Any]) -> GatewayProcess:
        if "RADGATE_TOKEN" not in os.environ:
            as_role("data-steward")  # `radgate gateway` authenticates its operator
        path = tmp_path / f"gateway-{len(started)}.yaml"
        path.write_text(yaml.safe_dump(config))
        process = GatewayProcess(path, {**os.environ, "TCP_NODELAY": "1"})
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def write_ct_series(
    directory: Path,
    count: int,
    *,
    study_uid: str | None = None,
    patient_id: str = "PAT-0001",
    patient_name: str = "Doe^Jane",
    size: int | None = None,
) -> list[Path]:
    """``count`` CT instances of one series (pydicom's real CT_small.dcm, new UIDs, PHI headers);
    ``size`` upsamples the 128x128 pixels to ``size`` x ``size`` (e.g. 512 for the benchmark)."""
    import numpy as np
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    from tests.dicom_factory import pydicom_file

    directory.mkdir(parents=True, exist_ok=True)
    template = dcmread(pydicom_file("CT_small.dcm"))
    if size:
        pixels = template.pixel_array
        repeat = max(1, size // pixels.shape[0])
        template.PixelData = np.kron(pixels, np.ones((repeat, repeat), pixels.dtype))[:size, :size].tobytes()
        template.Rows = template.Columns = size
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    paths = []
    for index in range(count):
        ds = template.copy()
        ds.PatientID, ds.PatientName = patient_id, patient_name
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        path = directory / f"ct-{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# Real files from the pydicom wheel, one per transfer syntax, and the storescu option that
# proposes that syntax (storescu proposes only uncompressed syntaxes unless told).
MIXED_TRANSFER_SYNTAX_FILES: dict[str, list[str]] = {
    "-xe": ["CT_small.dcm", "rtplan.dcm"],  # Explicit VR LE (image, RT plan)
    "-xb": ["MR_small_bigendian.dcm"],  # Explicit VR Big Endian
    "-xd": ["image_dfl.dcm"],  # Deflated Explicit VR LE
    "-xy": ["SC_rgb_small_odd_jpeg.dcm"],  # JPEG Baseline
    "-xx": ["JPGExtended.dcm"],  # JPEG Extended
    "-xs": ["SC_rgb_jpeg_gdcm.dcm"],  # JPEG Lossless SV1
    "-xt": ["MR_small_jpeg_ls_lossless.dcm"],  # JPEG-LS Lossless
    "-xu": ["JPEGLSNearLossless_08.dcm"],  # JPEG-LS Near-Lossless
    "-xv": ["MR_small_jp2klossless.dcm"],  # JPEG 2000 Lossless
    "-xw": ["SC_rgb_gdcm_KY.dcm"],  # JPEG 2000
    "-xr": ["SC_rgb_rle.dcm"],  # RLE Lossless
}


# A real CT (pydicom's CT_small.dcm, new UIDs) re-encoded by dcmtk/GDCM into each compressed
# transfer syntax a modality may send: (storescu option, encoder command).
CT_ENCODINGS: dict[str, list[str]] = {
    "-xd": ["dcmconv", "+td"],  # Deflated Explicit VR LE
    "-xr": ["dcmcrle"],  # RLE Lossless
    "-xs": ["dcmcjpeg", "+e1"],  # JPEG Lossless SV1
    "-xx": ["dcmcjpeg", "+ee"],  # JPEG Extended (lossy, 12-bit)
    "-xt": ["dcmcjpls"],  # JPEG-LS Lossless
    "-xv": ["gdcmconv", "--j2k"],  # JPEG 2000 Lossless
    "-xw": ["gdcmconv", "--j2k", "--lossy", "-q", "90"],  # JPEG 2000
}


def encode_ct_variants(directory: Path) -> dict[str, Path]:
    """One CT instance per transfer syntax of ``CT_ENCODINGS``, each with its own UIDs."""
    import subprocess

    sources = write_ct_series(directory / "source", len(CT_ENCODINGS))
    out: dict[str, Path] = {}
    for (option, command), source in zip(CT_ENCODINGS.items(), sources, strict=True):
        target = directory / f"ct{option}.dcm"
        subprocess.run([*command, str(source), str(target)], check=True, capture_output=True)
        out[option] = target
    return out
