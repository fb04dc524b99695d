"""Cases for the viewer: an image and its attribution map, stored under ``RADGATE_HOME/ui/cases``.

A case folder holds ``case.json`` (title, finding, probability, method, summary, optional
``request_id`` of a served prediction), ``image.npy`` (float image, any range) and
``<method>.npy`` (attribution in [0, 1], image size). :func:`demo_case` builds one from a
synthetic radiograph with :func:`training.explain.explain` (a small untrained CNN: the map is
real Captum output, the finding is not a diagnosis).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from governance.settings import get_settings

__all__ = ["DEMO_CASE", "Case", "CaseError", "case_root", "demo_case", "list_cases", "load_case"]

DEMO_CASE = "demo"
_CASE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_METHOD = re.compile(r"^[a-z0-9_-]{1,32}$")


class CaseError(LookupError):
    """No such case, or its files are not readable."""


@dataclass(frozen=True)
class Case:
    case_id: str
    title: str
    finding: str = ""
    probability: float | None = None
    methods: list[str] = field(default_factory=list)
    summary: str = ""
    request_id: str | None = None

    def payload(self, method: str) -> dict[str, Any]:
        """Image as 16-bit values (with the original range) and the map as 8-bit, base64."""
        folder = case_root() / self.case_id
        if method not in self.methods:
            raise CaseError(f"case has no {method!r} explanation")
        image = np.load(folder / "image.npy").astype(np.float64)
        attribution = np.clip(np.load(folder / f"{method}.npy").astype(np.float64), 0.0, 1.0)
        if attribution.shape != image.shape:
            raise CaseError("attribution and image sizes differ")
        low, high = float(image.min()), float(image.max())
        scaled = np.round((image - low) / max(high - low, 1e-12) * 65535).astype("<u2")
        return {
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "min": low,
            "max": high,
            "image": base64.b64encode(scaled.tobytes()).decode(),
            "attribution": base64.b64encode(np.round(attribution * 255).astype(np.uint8).tobytes()).decode(),
        }


def case_root() -> Path:
    return get_settings().home / "ui" / "cases"


def load_case(case_id: str) -> Case:
    if not _CASE_ID.match(case_id):
        raise CaseError("bad case id")
    folder = case_root() / case_id
    if case_id == DEMO_CASE and not (folder / "case.json").exists():
        demo_case()
    try:
        meta = json.loads((folder / "case.json").read_text())
    except (OSError, ValueError) as exc:
        raise CaseError(f"no case {case_id!r}") from exc
    methods = [m for m in meta.get("methods", []) if _METHOD.match(str(m)) and (folder / f"{m}.npy").exists()]
    probability = meta.get("probability")
    return Case(
        case_id=case_id,
        title=str(meta.get("title", case_id)),
        finding=str(meta.get("finding", "")),
        probability=None if probability is None else float(probability),
        methods=methods,
        summary=str(meta.get("summary", "")),
        request_id=meta.get("request_id"),
    )


def list_cases() -> list[Case]:
    root = case_root()
    ids = {DEMO_CASE}
    if root.is_dir():
        ids |= {p.name for p in root.iterdir() if (p / "case.json").exists() and _CASE_ID.match(p.name)}
    cases = []
    for case_id in sorted(ids):
        try:
            cases.append(load_case(case_id))
        except CaseError:
            continue
    return cases


def _synthetic_radiograph(size: int = 128, seed: int = 7) -> np.ndarray:
    """A chest-radiograph-like image: bright mediastinum and ribs, dark lungs, one opacity."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = 900.0 + 300.0 * np.exp(-((x - 0.5) ** 2) / 0.01)  # mediastinum
    for cx in (0.3, 0.7):  # lungs
        image -= 500.0 * np.exp(-(((x - cx) / 0.16) ** 2 + ((y - 0.5) / 0.3) ** 2))
    image += 120.0 * (np.sin(y * 40.0) > 0.8) * (np.abs(x - 0.5) > 0.08)  # ribs
    image += 350.0 * np.exp(-(((x - 0.68) / 0.06) ** 2 + ((y - 0.62) / 0.06) ** 2))  # opacity
    image += rng.normal(0.0, 15.0, image.shape)
    return image.astype(np.float32)


def demo_case(force: bool = False) -> Case:
    """Create (once) the demo case: Grad-CAM and saliency of a small CNN on a synthetic radiograph."""
    import torch
    from torch import nn

    from training.explain import explain

    folder = case_root() / DEMO_CASE
    if (folder / "case.json").exists() and not force:
        return load_case(DEMO_CASE)
    folder.mkdir(parents=True, exist_ok=True)
    image = _synthetic_radiograph()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).eval()
    normalised = (image - image.mean()) / (image.std() + 1e-6)
    inputs = torch.from_numpy(normalised)[None, None]
    methods = []
    probability = 0.0
    for method in ("gradcam", "saliency"):
        result = explain(model, inputs, method, target=1, label_names=("normal", "opacity"))
        np.save(folder / f"{method}.npy", np.asarray(result.maps[0], dtype=np.float32))
        probability = float(result.probabilities[0][1])
        methods.append(method)
    np.save(folder / "image.npy", image)
    meta = {
        "title": "Demo radiograph (synthetic)",
        "finding": "opacity",
        "probability": probability,
        "methods": methods,
        "summary": (
            "Synthetic image and an untrained demonstration network: the maps show where this "
            "network's output is sensitive. Not a diagnosis."
        ),
        "request_id": None,
    }
    (folder / "case.json").write_text(json.dumps(meta, indent=2))
    return load_case(DEMO_CASE)
