"""``radgate demo`` (classification) as a new user runs it: real anatomy -> de-identification ->
champion and permuted-label challenger -> calibration and explanation evidence -> two-person
approval, the gate promotes one and refuses the other -> Ray Serve -> inference AE -> SR and
Secondary Capture in a real Orthanc -> a reviewer's feedback in monitoring and the audit trail.

Nothing here feeds evidence: every figure is the run's own, judged by the shipped policy. The
whole journey is slow (minutes of CPU training); its failure paths are quick.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from imaging.volumes.anatomy import TEMPLATES_DIR

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (TEMPLATES_DIR / "ch2bet.nii.gz").exists(), reason="mricron-data is not installed"
    ),
]

REPO = Path(__file__).resolve().parents[2]


def _demo(home: Path, *args: str, timeout: int = 3600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RADGATE_HOME": str(home), "RAY_AUTH_MODE": "disabled"}
    env.pop("RADGATE_POLICY", None)  # the shipped policy
    return subprocess.run(
        [sys.executable, "-m", "radgate", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _summary(home: Path) -> dict[str, Any]:
    return json.loads((home / "demo" / "summary.json").read_text())


def _orthanc_rest(workdir: Path, path: str) -> Any:
    """Orthanc's REST API with the credentials the demo wrote into its config (independent of
    the demo's own C-FIND check)."""
    import base64
    import urllib.request

    config = json.loads((workdir / "orthanc.json").read_text())
    user, password = next(iter(config["RegisteredUsers"].items()))
    request = urllib.request.Request(f"http://127.0.0.1:{config['HttpPort']}{path}")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_unreachable_pacs_fails_fast_and_says_what_to_do(tmp_path: Path) -> None:
    started = time.monotonic()
    done = _demo(tmp_path / "home", "--patients", "8", "--pacs", "NOBODY@127.0.0.1:9", timeout=300)
    assert done.returncode == 1
    assert "pacs-echo" in done.stdout and "does not answer C-ECHO" in done.stdout and "next:" in done.stdout
    summary = _summary(tmp_path / "home")
    assert summary["failed"]["stage"] == "pacs-echo"
    assert [s["outcome"] for s in summary["stages"]] == ["failed"]
    assert time.monotonic() - started < 240  # bounded: no hang on the silent peer


def test_bad_pacs_spec_and_rerun_of_the_ingest_stages(tmp_path: Path) -> None:
    done = _demo(tmp_path / "home", "--patients", "8", "--pacs", "not-a-peer", timeout=300)
    assert done.returncode == 1 and "AET@HOST:PORT" in done.stdout
    for run in (1, 2):  # the same RADGATE_HOME twice: nothing duplicated, nothing lost
        done = _demo(tmp_path / "home", "--patients", "40", "--stages", "ingest", timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        summary = _summary(tmp_path / "home")
        assert summary["ingest"]["inputs"] == 40 and summary["ingest"]["quarantined"] == 0
        assert summary["ingest"]["duplicates"] == (0 if run == 1 else 40)
        assert summary["ingest"]["residual_phi_instances"] == 0
        assert [s["stage"] for s in summary["stages"]] == ["data", "ingest", "dataset"]
        assert all(s["outcome"] == "ok" for s in summary["stages"])


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_the_classification_journey(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = _demo(home)
    summary = _summary(home)
    pacs_dir = Path((summary.get("serve", {}).get("orthanc") or {}).get("workdir", home / "demo" / "pacs"))
    try:
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
        assert summary == json.loads(done.stdout.strip().splitlines()[-1])
        assert all(s["outcome"] == "ok" for s in summary["stages"]), summary["stages"]
        # The data: enough test images per class and per subgroup the policy compares.
        dataset = summary["dataset"]["brain-lesion"]
        test = dataset["splits"]["test"]
        assert sum(test.values()) >= 60 and min(test.values()) >= 25
        assert min(n for groups in dataset["test_subgroup_sizes"].values() for n in groups.values()) >= 5
        assert dataset["min_subgroup_size"] >= 5
        # The champion learned; its probabilities are calibrated; the challenger did not learn.
        champion, challenger = summary["models"]["champion"], summary["models"]["challenger"]
        figures = champion["test"]
        assert figures["auroc"] >= 0.90 and figures["sensitivity"] >= 0.80 and figures["specificity"] >= 0.80
        assert figures["ece"] <= 0.08 and figures["max_subgroup_gap"] <= 0.10
        assert challenger["test"]["auroc"] < 0.80
        # Explanations point at the lesion and pass both sanity checks.
        explain = summary["explain"]
        assert explain["pointing_game"] >= 0.80 and explain["pointing_images"] >= 25
        assert explain["parameter_randomization"]["status"] == "passed"
        assert explain["label_randomization"]["status"] == "passed"
        # The gate: champion promoted after two distinct approvals, challenger refused with reasons.
        govern = summary["govern"]
        assert govern["champion"]["promoted_to_staging"] and summary["promoted"]
        assert len(set(govern["champion"]["approved_by"])) == 2
        assert not govern["challenger"]["promoted_to_staging"] and govern["challenger"]["reasons"]
        assert "test_auroc" in govern["challenger"]["failed"]
        # Served through the inference AE; results back in the same study of the real Orthanc.
        serve = summary["serve"]
        assert serve["prediction"]["version"] == champion["version"] and serve["prediction"]["pushed"] >= 2
        series = _orthanc_rest(pacs_dir, "/series?expand")
        study_of = {s["MainDicomTags"]["Modality"]: s["ParentStudy"] for s in series}
        assert {"MR", "SR", "OT"} <= set(study_of) and study_of["SR"] == study_of["OT"] == study_of["MR"]
        objects = serve["in_pacs"]["objects"]
        assert {o["modality"] for o in objects.values()} >= {"SR", "OT"}
        assert all(o["errors"] == 0 for o in objects.values() if o["checked"])
        # The reviewer's feedback: counted in monitoring, listed in Cases, in the verified audit.
        assert any(k.startswith("radgate_feedback") and v >= 1 for k, v in serve["gauges"].items())
        assert serve["cases_listed"] >= 1
        # More held-out studies served over HTTP: they agree with the site's labels, and the drift
        # check compares enough live requests with the training profile to judge (no alert).
        assert serve["worklist"]["requests"] >= 30 and serve["worklist"]["agree_with_site_labels"] >= 0.8
        drift = serve["drift"]
        assert drift["n_live"] >= 30 and not drift["insufficient_data"] and not drift["alert"]
        assert any(k.startswith("radgate_drift_live_samples") for k in drift["gauges"])
        # The same version on Triton (installed by scripts/setup.sh): published from the approved
        # artifact, served by Ray Serve's Triton backend, the same probabilities as in-process.
        triton = serve["triton"]
        assert triton["version"] == champion["version"] and triton["requests"] >= 30
        assert triton["max_probability_difference_vs_in_process"] <= 1e-3
        audit = serve["audit"]
        assert audit["chain_ok"] and audit["feedback_entries_by_radiologist"] >= 1
    finally:
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "ci" / "orthanc.py"), "stop", "--dir", str(pacs_dir)],
            capture_output=True, timeout=120,
        )  # fmt: skip
