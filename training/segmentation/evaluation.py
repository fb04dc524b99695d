"""Evaluation of a 3D segmentation model: Dice and Hausdorff-95 per structure, case and subgroup.

Each test volume goes through the eval pipeline of the spec (resampled to ``spec.spacing``),
MONAI ``sliding_window_inference`` and argmax; MONAI ``DiceMetric`` and
``HausdorffDistanceMetric(percentile=95)`` (in mm, with the spec's spacing) are computed per
structure on that grid. A structure absent from both the reference and the prediction of a
case is not counted for that case (NaN), a structure missed or hallucinated counts Dice 0.
Subgroups are the row's ``subgroups`` attributes (site, manufacturer, sex, age band...);
the gap of an attribute is the largest difference of mean Dice between its values that have
at least ``min_subgroup_size`` cases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from training.segmentation.data import IMAGE_KEY, LABEL_KEY, eval_transform
from training.segmentation.module import metric_name, sliding_window_logits
from training.segmentation.spec import SegmentationSpec

__all__ = ["SegmentationReport", "case_metrics", "evaluate_segmentation"]


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


@dataclass
class SegmentationReport:
    """Test-split Dice and HD95 per structure, overall and per subgroup (see the module docstring)."""

    structures: list[str]
    #: structure -> {"dice", "hd95", "n"} (means over cases), plus "mean" over structures.
    overall: dict[str, dict[str, float]]
    #: One entry per test case: ``series_uid`` (de-identified), ``dice``/``hd95`` per structure.
    cases: list[dict[str, Any]] = field(default_factory=list)
    #: attribute -> value -> {"n", "dice", "hd95", "dice_<structure>"...}.
    subgroups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: attribute -> largest difference of mean Dice between sized subgroups (NaN if < 2).
    gaps: dict[str, float] = field(default_factory=dict)

    @property
    def largest_gap(self) -> tuple[str, str, float]:
        """(attribute, "dice", gap) of the largest subgroup Dice gap; NaN if none measurable."""
        measured = [(a, g) for a, g in self.gaps.items() if not math.isnan(g)]
        if not measured:
            return ("", "dice", math.nan)
        attribute, gap = max(measured, key=lambda item: item[1])
        return (attribute, "dice", gap)

    def flat_metrics(self) -> dict[str, float]:
        """``test_dice_mean``, ``test_dice_<structure>``, ``test_hd95_<structure>``, gaps: for MLflow."""
        out: dict[str, float] = {}
        for name, values in self.overall.items():
            key = "mean" if name == "mean" else metric_name(name)
            out[f"test_dice_{key}"] = values["dice"]
            out[f"test_hd95_{key}"] = values["hd95"]
        out["test_n"] = float(len(self.cases))
        for attribute, gap in self.gaps.items():
            out[f"subgroup_gap_{attribute}_dice"] = gap
        out["max_subgroup_dice_gap"] = self.largest_gap[2]
        return {k: v for k, v in out.items() if not math.isnan(v)}

    def summary(self) -> dict[str, float]:
        """The figures written as ``radgate.metrics.*`` tags on the registered version."""
        out = {"dice_mean": self.overall["mean"]["dice"], "hd95_mean": self.overall["mean"]["hd95"]}
        out.update({f"dice_{metric_name(s)}": self.overall[s]["dice"] for s in self.structures})
        out["n_test"] = float(len(self.cases))
        out["max_subgroup_dice_gap"] = self.largest_gap[2]
        return out

    def to_dict(self) -> dict[str, Any]:
        attribute, metric, gap = self.largest_gap
        return {
            "task": "segmentation",
            "structures": self.structures,
            "overall": self.overall,
            "cases": self.cases,
            "subgroups": self.subgroups,
            "gaps": self.gaps,
            "largest_gap": {"attribute": attribute, "metric": metric, "gap": gap},
        }


@torch.no_grad()
def case_metrics(
    network: torch.nn.Module, row: Mapping[str, Any], spec: SegmentationSpec, sw_batch_size: int = 4
) -> tuple[list[float], list[float]]:
    """(Dice per structure, HD95 mm per structure) of one volume; NaN where undefined."""
    from monai.metrics import DiceMetric, HausdorffDistanceMetric
    from monai.networks.utils import one_hot

    sample = eval_transform(spec)({IMAGE_KEY: str(row[IMAGE_KEY]), LABEL_KEY: str(row[LABEL_KEY])})
    image = torch.as_tensor(sample[IMAGE_KEY]).float()[None]
    label = torch.as_tensor(sample[LABEL_KEY]).long()[None]
    logits = sliding_window_logits(network, image, spec, sw_batch_size)
    classes = spec.num_classes
    predicted = one_hot(logits.argmax(dim=1, keepdim=True), classes)
    reference = one_hot(label, classes)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(predicted, reference)
    hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
        predicted, reference, spacing=list(spec.spacing)
    )
    dice_values = [float(v) for v in torch.as_tensor(dice).reshape(-1)]
    present = reference[0, 1:].flatten(1).any(dim=1) | predicted[0, 1:].flatten(1).any(dim=1)
    # Missed or hallucinated entirely: Dice 0 (MONAI gives NaN when the reference is empty).
    dice_values = [
        0.0 if math.isnan(d) and bool(p) else d for d, p in zip(dice_values, present.tolist(), strict=True)
    ]
    hd_values = [float(v) if math.isfinite(float(v)) else math.nan for v in torch.as_tensor(hd95).reshape(-1)]
    return dice_values, hd_values


def _aggregate(cases: Sequence[Mapping[str, Any]], structures: Sequence[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for index, name in enumerate(structures):
        dice = [c["dice"][index] for c in cases]
        out[name] = {
            "dice": _nanmean(dice),
            "hd95": _nanmean([c["hd95"][index] for c in cases]),
            "n": float(sum(not math.isnan(d) for d in dice)),
        }
    out["mean"] = {
        "dice": _nanmean([out[s]["dice"] for s in structures]),
        "hd95": _nanmean([out[s]["hd95"] for s in structures]),
        "n": float(len(cases)),
    }
    return out


def evaluate_segmentation(
    network: torch.nn.Module,
    rows: Sequence[Mapping[str, Any]],
    spec: SegmentationSpec,
    *,
    min_subgroup_size: int = 5,
    sw_batch_size: int = 4,
) -> SegmentationReport:
    """Measure ``network`` (eval mode, CPU or its device) on the test ``rows``."""
    network = network.eval()
    structures = spec.structures
    cases: list[dict[str, Any]] = []
    for row in rows:
        dice, hd95 = case_metrics(network, row, spec, sw_batch_size)
        cases.append(
            {"series_uid": str(row.get("series_uid", "")), "dice": dice, "hd95": hd95,
             "subgroups": {str(k): str(v) for k, v in dict(row.get("subgroups") or {}).items()}}
        )  # fmt: skip
    report = SegmentationReport(structures=structures, overall=_aggregate(cases, structures), cases=cases)
    attributes: list[str] = sorted({str(a) for c in cases for a in c["subgroups"]})
    for attribute in attributes:
        groups: dict[str, dict[str, float]] = {}
        by_value: dict[str, list[dict[str, Any]]] = {}
        for case in cases:
            by_value.setdefault(case["subgroups"].get(attribute, "unknown"), []).append(case)
        for value, members in sorted(by_value.items()):
            summary = _aggregate(members, structures)
            groups[value] = {
                "n": float(len(members)),
                "dice": summary["mean"]["dice"],
                "hd95": summary["mean"]["hd95"],
                **{f"dice_{metric_name(s)}": summary[s]["dice"] for s in structures},
            }
        report.subgroups[attribute] = groups
        sized = [g["dice"] for g in groups.values() if g["n"] >= min_subgroup_size]
        sized = [d for d in sized if not math.isnan(d)]
        report.gaps[attribute] = max(sized) - min(sized) if len(sized) >= 2 else math.nan
    return report
