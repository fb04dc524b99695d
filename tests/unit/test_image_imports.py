"""The slim images leave distributions out (``RADGATE_WITHOUT`` in their Dockerfile) and take
OpenCV's headless build: the code each one runs must import without what it leaves out, and the
requirements helper must hand RapidOCR every requirement it has but the GUI OpenCV.

Each check runs in a fresh interpreter whose import system refuses the top-level modules of the
left-out distributions (the venv has them all installed), so a module-level import of one of
them anywhere in the image's import closure fails here as it would in the image.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
_SPEC = importlib.util.spec_from_file_location("radgate_docker_requirements", DOCKER / "requirements.py")
assert _SPEC is not None and _SPEC.loader is not None
_helper = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_helper)
HEADLESS, WITHOUT_DEPS = _helper.HEADLESS, _helper.WITHOUT_DEPS
canonical, requirements = _helper.canonical, _helper.requirements

# What each image's command imports before it serves (its CLI command module and the app it
# builds); the functions are called where building them needs no running service.
_ENTRY = {
    "gateway": (
        ["imaging.gateway.cli", "imaging.gateway.service", "imaging.gateway.sink", "imaging.deid"],
        [],
    ),
    "ui": (["serving.ui.cli", "serving.ui"], ["serving.ui:create_ui_app"]),
    "serving": (["serving.cli", "serving.app", "serving.worker", "serving.triton"], []),
}

_PROBE = r"""
import importlib, json, sys
blocked = set(json.loads(sys.argv[1]))

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"{name} is not in this image", name=name)
        return None

sys.meta_path.insert(0, Refuse())
for module in json.loads(sys.argv[2]):
    importlib.import_module(module)
for target in json.loads(sys.argv[3]):
    module, _, attr = target.partition(":")
    getattr(importlib.import_module(module), attr)()
print("ok")
"""


def _without(image: str) -> set[str]:
    text = (DOCKER / f"{image}.Dockerfile").read_text()
    match = re.search(r'^ARG RADGATE_WITHOUT="([^"]*)"', text, re.M)
    assert match, f"{image}.Dockerfile declares no RADGATE_WITHOUT"
    return {canonical(name) for name in match.group(1).split()}


def _modules_of(distributions: set[str]) -> set[str]:
    """Top-level import names the venv's installed distributions provide."""
    modules = set()
    for module, owners in packages_distributions().items():
        if {canonical(owner) for owner in owners} & distributions:
            modules.add(module)
    return modules


@pytest.mark.parametrize("image", sorted(_ENTRY))
def test_image_code_imports_without_what_the_image_leaves_out(image: str, tmp_path: Path) -> None:
    left_out = _without(image)
    blocked = _modules_of(left_out)
    assert blocked, f"{image}: no module found for {sorted(left_out)}"
    modules, calls = _ENTRY[image]
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(sorted(blocked)), json.dumps(modules), json.dumps(calls)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RADGATE_HOME": str(tmp_path / "home")},
    )
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


def test_the_probe_refuses_what_it_blocks(tmp_path: Path) -> None:
    """The probe itself: a blocked module's import fails (else the test above proves nothing)."""
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, '["cv2"]', '["imaging.deid.burned_in.render"]', "[]"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert run.returncode == 0  # render imports cv2 inside its functions only
    run = subprocess.run(
        [sys.executable, "-c", _PROBE + "import cv2\n", json.dumps(["cv2"]), "[]", "[]"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert run.returncode != 0 and "cv2 is not in this image" in run.stderr


def test_images_with_ocr_take_the_headless_opencv_and_keep_rapidocr_whole(tmp_path: Path) -> None:
    no_deps_file = tmp_path / "no-deps.txt"
    for image in ("gateway", "trainer"):
        text = (DOCKER / f"{image}.Dockerfile").read_text()
        match = re.search(r'^ARG RADGATE_WITHOUT="([^"]*)"', text, re.M)
        without = set(match.group(1).split()) if match else set()
        assert "rapidocr-onnxruntime" not in without, image
        assert "libgl1" not in text, f"{image}: the headless OpenCV needs no libGL"
        assert "--no-deps-to no-deps.txt" in text and "-r no-deps.txt" in text, image
    out, no_deps = requirements(REPO / "pyproject.toml", ["postgres", "s3"], set())
    names = {canonical(re.split(r"[<>=!;\[ ]", line)[0]) for line in out}
    assert "opencv-python-headless" in names and "opencv-python" not in names
    assert [canonical(re.split(r"[<>=!;\[ ]", r)[0]) for r in no_deps] == sorted(WITHOUT_DEPS)
    # RapidOCR goes in with --no-deps: every requirement it declares but the GUI OpenCV must be
    # installed by the rest (a RapidOCR upgrade that adds one fails here).
    declared = {canonical(re.split(r"[<>=!;\[ ]", line)[0]) for line in out}
    for requirement in requires("rapidocr-onnxruntime") or []:
        name = canonical(re.split(r"[<>=!;\[ ]", requirement)[0])
        if name in HEADLESS:
            continue
        assert name in declared, f"RapidOCR needs {name}: declare it in pyproject.toml"
    # the lock pins the headless build at the GUI build's release
    lock = dict(
        line.split("==", 1)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert lock["opencv-python-headless"] == lock["opencv-python"]
    # the helper refuses to print a list that would pull RapidOCR's GUI OpenCV back in
    run = subprocess.run(
        [sys.executable, str(DOCKER / "requirements.py"), str(REPO / "pyproject.toml"), ""],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--no-deps" in run.stderr
    helper = [sys.executable, str(DOCKER / "requirements.py"), str(REPO / "pyproject.toml"), ""]
    run = subprocess.run(
        [*helper, "--no-deps-to", str(no_deps_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and no_deps_file.read_text().startswith("rapidocr-onnxruntime")
