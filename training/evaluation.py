"""Evaluation of a binary classifier: AUROC, operating point, calibration, subgroup gaps, plots."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.config import EvaluationConfig, OperatingPoint

__all__ = [
    "EvaluationReport",
    "binary_metrics",
    "choose_threshold",
    "evaluate",
    "expected_calibration_error",
    "reliability_curve",
    "save_plots",
]

SUBGROUP_KEYS = ("site", "manufacturer", "sex", "age_band")


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, method: OperatingPoint, target_sensitivity: float = 0.9
) -> float:
    """Operating point on validation scores: Youden's J, or the highest threshold reaching a sensitivity."""
    from sklearn.metrics import roc_curve

    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, scores)
    thresholds = np.clip(thresholds, 0.0, 1.0)
    if method is OperatingPoint.SENSITIVITY:
        reaching = np.flatnonzero(tpr >= target_sensitivity)
        return float(thresholds[reaching[0]]) if len(reaching) else 0.5
    return float(thresholds[int(np.argmax(tpr - fpr))])


def reliability_curve(labels: np.ndarray, scores: np.ndarray, bins: int) -> list[dict[str, float]]:
    """Per equal-width bin: mean confidence, observed frequency, count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append(
                {"confidence": float(scores[mask].mean()), "frequency": float(labels[mask].mean()),
                 "count": float(mask.sum())}
            )  # fmt: skip
    return out


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """ECE of the positive-class probability (equal-width bins, weighted by count)."""
    curve = reliability_curve(labels, scores, bins)
    total = max(len(scores), 1)
    return float(sum(b["count"] / total * abs(b["confidence"] - b["frequency"]) for b in curve))


def binary_metrics(
    labels: np.ndarray, scores: np.ndarray, threshold: float, bins: int = 10
) -> dict[str, float]:
    """AUROC, sensitivity, specificity, PPV, NPV, accuracy and ECE; NaN where undefined."""
    from sklearn.metrics import roc_auc_score

    labels = labels.astype(int)
    predicted = (scores >= threshold).astype(int)
    tp = int(((predicted == 1) & (labels == 1)).sum())
    tn = int(((predicted == 0) & (labels == 0)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    return {
        "n": float(len(labels)),
        "prevalence": ratio(tp + fn, len(labels)),
        "auroc": float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else math.nan,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "accuracy": ratio(tp + tn, len(labels)),
        "ece": expected_calibration_error(labels, scores, bins) if len(labels) else math.nan,
        "tp": float(tp),
        "tn": float(tn),
        "fp": float(fp),
        "fn": float(fn),
    }


@dataclass
class EvaluationReport:
    """Test-split metrics at the validation operating point, overall and per subgroup."""

    threshold: float
    overall: dict[str, float]
    validation: dict[str, float]
    subgroups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    gaps: dict[str, dict[str, float]] = field(default_factory=dict)
    reliability: list[dict[str, float]] = field(default_factory=list)

    @property
    def largest_gap(self) -> tuple[str, str, float]:
        """(attribute, metric, gap) of the largest gap across subgroups; NaN gap if none measurable."""
        best = ("", "", math.nan)
        for attribute, metrics in self.gaps.items():
            for metric, gap in metrics.items():
                if not math.isnan(gap) and (math.isnan(best[2]) or gap > best[2]):
                    best = (attribute, metric, gap)
        return best

    def flat_metrics(self) -> dict[str, float]:
        """``test_auroc``, ``val_auroc_at_op``..., ``subgroup_gap_<attr>_<metric>``, for MLflow."""
        out = {f"test_{k}": v for k, v in self.overall.items()}
        out.update(
            {
                f"valop_{k}": v
                for k, v in self.validation.items()
                if k in ("auroc", "sensitivity", "specificity")
            }
        )
        out["operating_threshold"] = self.threshold
        for attribute, metrics in self.gaps.items():
            for metric, gap in metrics.items():
                out[f"subgroup_gap_{attribute}_{metric}"] = gap
        out["max_subgroup_gap"] = self.largest_gap[2]
        return {k: v for k, v in out.items() if not math.isnan(v)}

    def summary(self) -> dict[str, float]:
        """The figures written as ``radgate.metrics.*`` tags on the registered version."""
        return {
            "auroc": self.overall["auroc"],
            "sensitivity": self.overall["sensitivity"],
            "specificity": self.overall["specificity"],
            "ece": self.overall["ece"],
            "n_test": self.overall["n"],
            "max_subgroup_gap": self.largest_gap[2],
        }

    def to_dict(self) -> dict[str, Any]:
        attribute, metric, gap = self.largest_gap
        return {
            "threshold": self.threshold,
            "overall": self.overall,
            "validation": self.validation,
            "subgroups": self.subgroups,
            "gaps": self.gaps,
            "largest_gap": {"attribute": attribute, "metric": metric, "gap": gap},
            "reliability": self.reliability,
        }


def evaluate(
    val_labels: np.ndarray,
    val_scores: np.ndarray,
    test_labels: np.ndarray,
    test_scores: np.ndarray,
    test_attributes: Sequence[Mapping[str, Any]],
    config: EvaluationConfig,
) -> EvaluationReport:
    """Choose the operating point on validation, then measure the test split and its subgroups."""
    threshold = choose_threshold(val_labels, val_scores, config.operating_point, config.target_sensitivity)
    bins = config.calibration_bins
    report = EvaluationReport(
        threshold=threshold,
        overall=binary_metrics(test_labels, test_scores, threshold, bins),
        validation=binary_metrics(val_labels, val_scores, threshold, bins),
        reliability=reliability_curve(test_labels, test_scores, bins),
    )
    for key in SUBGROUP_KEYS:
        values = np.array([str(a.get(key, "unknown")) for a in test_attributes])
        groups: dict[str, dict[str, float]] = {}
        for value in sorted(set(values.tolist())):
            mask = values == value
            groups[value] = binary_metrics(test_labels[mask], test_scores[mask], threshold, bins)
        report.subgroups[key] = groups
        sized = [m for m in groups.values() if m["n"] >= config.min_subgroup_size]
        report.gaps[key] = {}
        for metric in ("auroc", "sensitivity", "specificity"):
            measured = [m[metric] for m in sized if not math.isnan(m[metric])]
            report.gaps[key][metric] = max(measured) - min(measured) if len(measured) >= 2 else math.nan
    return report


def save_plots(report: EvaluationReport, out_dir: Path) -> list[Path]:
    """Reliability diagram and confusion matrix as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot(
        [b["confidence"] for b in report.reliability], [b["frequency"] for b in report.reliability], "o-",
        label=f"model (ECE {report.overall['ece']:.3f})",
    )  # fmt: skip
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Reliability (test)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    paths.append(out_dir / "reliability.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    m = report.overall
    matrix = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{int(value)}", ha="center", va="center")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["pred 0", "pred 1"], yticklabels=["true 0", "true 1"])
    ax.set_title(f"Confusion (threshold {report.threshold:.2f})")
    fig.tight_layout()
    paths.append(out_dir / "confusion_matrix.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
