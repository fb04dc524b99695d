"""``radgate demo --task segmentation`` end to end as a new user runs it, into a real Orthanc:
anatomy series -> ingest -> dataset -> 3D UNet -> approvals -> gate -> served SEG over the series.

Slow (minutes of CPU training). The policy is the shipped one except the Dice checks for the
demo model (``RADGATE_POLICY``): the chain is under test here, model quality in
``test_segmentation_training.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from imaging.volumes.anatomy import TEMPLATES_DIR

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(not (TEMPLATES_DIR / "ch2.nii.gz").exists(), reason="mricron-data is not installed"),
]

REPO = Path(__file__).resolve().parents[2]


def _policy(tmp_path: Path) -> Path:
    policy = yaml.safe_load((REPO / "configs" / "governance" / "policy.yaml").read_text())
    model = yaml.safe_load((REPO / "configs" / "train" / "segmentation-demo.yaml").read_text())["registry"]
    # This run is cut short (6 patients, 4 epochs: far from the shipped Dice floor, and two test
    # series form no subgroups of two): the demo model gets a floor of 0 on Dice and no gap check;
    # every other check (de-identified dataset) and the two-person approval stay as shipped. (The
    # full demo, 24 patients and the config's 100 epochs, passes the shipped policy unchanged:
    # README, test Dice 0.83-0.93 per structure.)
    checks = [
        {**c, "threshold": 0.0} if c["name"] == "min_dice" else c
        for c in policy["default"]["checks"]
        if c["name"] != "max_subgroup_dice_gap"
    ]
    policy["models"] = {model["model_name"]: {"checks": checks}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def test_demo_puts_a_dicom_seg_over_the_series_in_orthanc(
    tmp_path: Path, radgate_home: Path, clean_orthanc: Any
) -> None:
    env = {**os.environ, "RADGATE_POLICY": str(_policy(tmp_path)), "RAY_AUTH_MODE": "disabled"}
    pacs = f"{clean_orthanc.aet}@127.0.0.1:{clean_orthanc.dicom_port}"
    args = ["demo", "--task", "segmentation", "--patients", "6", "-w", "1", "--pacs", pacs]
    args += ["--set", "optim.max_epochs=4"]
    done = subprocess.run(
        [sys.executable, "-m", "radgate", *args], env=env, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ingest"]["residual_phi_instances"] == 0 and summary["ingest"]["quarantined"] == 0
    assert summary["govern"]["promoted_to_staging"], summary["govern"]
    served = summary["serve"]
    assert served["pushed"]["sent"] == 2 and served["series_in_pacs"] > 0
    dice = served["dice_vs_site_labels"]  # the served SEG read back onto the series
    assert set(dice) == {"cerebellum", "deep_grey_nuclei", "occipital_lobe"} and all(
        0 <= v <= 1 for v in dice.values()
    )
    # In the PACS: one study with the MR series and a SEG that references exactly that series.
    series = clean_orthanc.rest("GET", "/series?expand")
    by_modality = {s["MainDicomTags"]["Modality"]: s for s in series}
    assert set(by_modality) == {"MR", "SEG", "SR"}, [s["MainDicomTags"] for s in series]
    assert by_modality["SEG"]["ParentStudy"] == by_modality["MR"]["ParentStudy"]
    seg = clean_orthanc.rest("GET", f"/instances/{by_modality['SEG']['Instances'][0]}/simplified-tags")
    referenced = seg["ReferencedSeriesSequence"][0]["SeriesInstanceUID"]
    assert referenced == by_modality["MR"]["MainDicomTags"]["SeriesInstanceUID"]
    assert len(by_modality["MR"]["Instances"]) == served["series_in_pacs"]
    # the served results were also kept locally and validate as DICOM objects
    for kind in ("seg", "sr"):
        assert Path(served["objects"][kind]).exists()
