"""Every image built with podman and the compose stack's smoke journey (``scripts/containers.sh``).

Marked ``containers`` (not in the default run: the builds take tens of minutes on two cores):
``scripts/test.sh -m containers``. It builds the bases and every image, brings up
docker/compose.yaml with the ``local`` override, runs scripts/ci/container_smoke.py through it and
tears the stack down; the journey's report (steps, timings) is checked here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.containers

REPO = Path(__file__).resolve().parents[2]


def test_images_build_and_the_smoke_journey_passes(tmp_path: Path) -> None:
    if shutil.which("podman") is None and shutil.which("docker") is None:
        pytest.fail("no container engine: scripts/ci/containers-apt.sh installs podman")
    state = Path(os.environ.get("RADGATE_CONTAINERS_STATE", "/var/tmp/radgate-containers"))
    report = state / "smoke.json"
    report.unlink(missing_ok=True)
    done = subprocess.run(
        [str(REPO / "scripts" / "containers.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3 * 3600,
        env={**os.environ, "RADGATE_CONTAINERS_STATE": str(state)},
    )
    assert report.exists(), (done.stdout + done.stderr)[-4000:]
    journey = json.loads(report.read_text())
    failed = [s for s in journey["steps"] if not s["ok"]]
    assert done.returncode == 0 and journey["ok"] and not failed, (failed, done.stderr[-4000:])
    names = [s["step"] for s in journey["steps"]]
    assert names[0] == "stack ready" and names[-1] == "gateway killed mid-transfer loses nothing"
    assert len(names) == 9
    # Image sizes recorded by the builds: CPU-only gateway and UI under 1.5 GB, the CPU trainer
    # and serving images under 2.5 GB.
    sizes = {
        line.split()[0]: int(line.split()[3])
        for line in (state / "builds.txt").read_text().splitlines()
        if line
    }
    assert sizes["gateway"] < 1.5e9 and sizes["ui"] < 1.5e9, sizes
    assert sizes["trainer"] < 2.5e9 and sizes["serving"] < 2.5e9, sizes
