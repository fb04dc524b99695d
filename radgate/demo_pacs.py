"""The demo's PACS: an existing one named ``AET@HOST:PORT``, or a private Orthanc the demo starts
on 127.0.0.1 (``scripts/ci/orthanc.py``, locked down: known AE titles only, HTTP user), left
running afterwards so that a person can look at the study (stop it with
``python scripts/ci/orthanc.py stop --dir RADGATE_HOME/demo/pacs``).

Every network call here is bounded (C-ECHO and C-FIND time out in seconds): an unreachable PACS
is a clear error, never a hang.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from radgate.demo_stages import DemoFailure

if TYPE_CHECKING:
    from imaging.gateway.config import PacsPeer

__all__ = ["dciodvfy", "echo", "find_series", "load_orthanc_module", "parse_peer", "start_orthanc"]

_TIMEOUT_S = 5
_REPO = Path(__file__).resolve().parents[1]


def parse_peer(spec: str, stage: str = "serve") -> PacsPeer:
    """``AET@HOST:PORT`` -> a peer (a :class:`DemoFailure` that says the format otherwise)."""
    from imaging.gateway.config import PacsPeer

    aet, _, address = spec.partition("@")
    host, _, port = address.rpartition(":")
    if not (aet and host and port.isdigit() and 0 < int(port) < 65536):
        raise DemoFailure(
            stage, f"--pacs {spec[:80]!r} is not AET@HOST:PORT", "e.g. --pacs ORTHANC@127.0.0.1:4242"
        )
    return PacsPeer(name="demo-pacs", ae_title=aet, host=host, port=int(port))


@contextmanager
def _quiet_pynetdicom() -> Iterator[None]:
    log = logging.getLogger("pynetdicom")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def echo(peer: PacsPeer, calling_ae: str = "RADGATE") -> bool:
    """C-ECHO the peer within a few seconds; a refused or silent peer is ``False``."""
    from pynetdicom import AE

    with _quiet_pynetdicom():
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = _TIMEOUT_S
        ae.connection_timeout = _TIMEOUT_S
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        assoc.release()
        return bool(status) and int(status.get("Status", -1)) == 0


def find_series(peer: PacsPeer, study_instance_uid: str, calling_ae: str = "RADGATE") -> list[dict[str, Any]]:
    """C-FIND (Study Root, SERIES level) of one study: modality, series UID and instance count of
    each series the PACS holds (bounded by timeouts)."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_instance_uid
    query.SeriesInstanceUID = ""
    query.Modality = ""
    query.SeriesDescription = ""
    query.NumberOfSeriesRelatedInstances = ""
    found: list[dict[str, Any]] = []
    with _quiet_pynetdicom():
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = _TIMEOUT_S
        ae.connection_timeout = _TIMEOUT_S
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        if not assoc.is_established:
            raise DemoFailure(
                "pacs", f"{peer.ae_title}@{peer.host}:{peer.port} refused the C-FIND association"
            )
        try:
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if status and int(status.Status) in (0xFF00, 0xFF01) and identifier is not None:
                    found.append(
                        {
                            "modality": str(identifier.get("Modality", "")),
                            "series_instance_uid": str(identifier.get("SeriesInstanceUID", "")),
                            "description": str(identifier.get("SeriesDescription", "")),
                            "instances": int(identifier.get("NumberOfSeriesRelatedInstances", 0) or 0),
                        }
                    )
        finally:
            assoc.release()
    return found


def load_orthanc_module() -> ModuleType:
    """``scripts/ci/orthanc.py`` of this checkout (the demo's PACS launcher)."""
    path = _REPO / "scripts" / "ci" / "orthanc.py"
    if not path.exists():
        raise DemoFailure(
            "pacs", "no scripts/ci/orthanc.py next to this installation", "pass --pacs AET@HOST:PORT"
        )
    spec = importlib.util.spec_from_file_location("radgate_demo_orthanc", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def start_orthanc(workdir: Path, modalities: dict[str, tuple[str, str, int]]) -> Any:
    """A private Orthanc (with the OHIF viewer when installed) under ``workdir``; one left from an
    earlier demo run there is stopped first (its studies are kept)."""
    orthanc = load_orthanc_module()
    if shutil.which("Orthanc") is None:
        raise DemoFailure("pacs", "Orthanc is not installed", "scripts/ci/install-apt.sh, or pass --pacs")
    orthanc._stop_from_dir(workdir)
    viewer = True
    try:
        from imaging.gateway.viewer import build_site

        build_site(workdir / "ohif")
    except Exception:  # no OHIF build on this machine: Orthanc's own explorer still shows the study
        viewer = False
    server = orthanc.OrthancServer(workdir, modalities=dict(modalities), viewer=viewer)
    try:
        return server.start()
    except orthanc.OrthancError as exc:
        raise DemoFailure("pacs", f"Orthanc did not start ({exc})", f"see {workdir / 'orthanc.log'}") from exc


def dciodvfy(data: bytes, workdir: Path, name: str) -> dict[str, Any]:
    """dciodvfy (dicom3tools) on one object: errors counted; ``None`` errors when not installed."""
    if shutil.which("dciodvfy") is None:
        return {"checked": False, "errors": None}
    path = workdir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
    return {"checked": True, "errors": len(errors), "first_errors": errors[:3], "exit": done.returncode}
