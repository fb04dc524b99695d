"""Evaluation of a binary classifier: AUROC, operating point, calibration, subgroup gaps, plots.

Calibration is temperature scaling (Guo et al., ICML 2017): one scalar ``T`` dividing the logits,
fitted by minimising the negative log-likelihood on the VALIDATION split. It does not change the
ranking (AUROC), only how far probabilities are from 0.5. When the run gives logits, every
figure of the report (operating point, test metrics, subgroups, ECE) is of the calibrated
probability, the one served (``T`` is registered with the model and applied at serving); the
test ECE of the uncalibrated probability is kept as ``ece_before`` to show what it changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.config import EvaluationConfig, OperatingPoint

__all__ = [
    "Calibration",
    "EvaluationReport",
    "apply_temperature",
    "binary_metrics",
    "choose_threshold",
    "evaluate",
    "evaluate_logits",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_curve",
    "save_plots",
]

SUBGROUP_KEYS = ("site", "manufacturer", "sex", "age_band")
#: Bounds of the fitted temperature: below 0.05 a separable validation split would drive T to 0
#: (every probability 0 or 1); above 20 everything is 0.5.
_TEMPERATURE_BOUNDS = (0.05, 20.0)


def apply_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities ``softmax(logits / T)`` for ``[N, C]`` logits (numerically stable)."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def _nll(labels: np.ndarray, logits: np.ndarray, temperature: float) -> float:
    probabilities = apply_temperature(logits, temperature)
    picked = probabilities[np.arange(len(labels)), labels.astype(int)]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature minimising the NLL of ``labels`` (validation) under ``softmax(logits / T)``,
    searched on log T within :data:`_TEMPERATURE_BOUNDS`; 1.0 without labels.

    On a split that the logits separate perfectly (every image's own class has the largest logit)
    the NLL keeps falling as T -> 0 and has no minimum: the fit would sharpen every probability
    to 0 or 1 on no evidence. The temperature then stays 1.0.
    """
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        return 1.0
    if np.all(np.argmax(np.asarray(logits), axis=1) == labels.astype(int)):
        return 1.0
    low, high = (math.log(b) for b in _TEMPERATURE_BOUNDS)
    found = minimize_scalar(
        lambda log_t: _nll(labels, logits, math.exp(log_t)), bounds=(low, high), method="bounded"
    )
    return float(math.exp(found.x))


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling fitted on validation, judged on test."""

    temperature: float
    ece_before: float  # test ECE of softmax(logits)
    ece_after: float  # test ECE of softmax(logits / T): what is served
    val_nll_before: float
    val_nll_after: float

    def to_dict(self) -> dict[str, float]:
        return {
            "temperature": self.temperature,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "val_nll_before": self.val_nll_before,
            "val_nll_after": self.val_nll_after,
        }


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, method: OperatingPoint, target_sensitivity: float = 0.9
) -> float:
    """Operating point on validation scores: Youden's J, or the highest threshold reaching a sensitivity.

    Youden's threshold sits halfway, in log-odds, between the lowest score it calls positive
    and the next score below (the same validation decisions): a threshold on the lowest positive
    score itself (the ROC curve's point) calls any slightly lower test score negative, which on a
    well-separated validation split puts the operating point at the edge of the positives; and
    halfway in probability would sit next to the positives again once scores saturate near 0
    and 1 (log-odds is where a logistic model's margin is measured).
    """
    from sklearn.metrics import roc_curve

    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    thresholds = np.clip(thresholds, 0.0, 1.0)
    if method is OperatingPoint.SENSITIVITY:
        reaching = np.flatnonzero(tpr >= target_sensitivity)
        return float(thresholds[reaching[0]]) if len(reaching) else 0.5
    best = int(np.argmax(tpr - fpr))
    if best + 1 < len(thresholds):
        low, high = np.clip(thresholds[[best + 1, best]], 1e-12, 1 - 1e-12)
        mid = (np.log(low / (1 - low)) + np.log(high / (1 - high))) / 2
        return float(1 / (1 + np.exp(-mid)))
    return float(thresholds[best])


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
    calibration: Calibration | None = None

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
        if self.calibration is not None:
            out["calibration_temperature"] = self.calibration.temperature
            out["test_ece_before_calibration"] = self.calibration.ece_before
            out["val_nll_before_calibration"] = self.calibration.val_nll_before
            out["val_nll_after_calibration"] = self.calibration.val_nll_after
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
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
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


def evaluate_logits(
    val_labels: np.ndarray,
    val_logits: np.ndarray,
    test_labels: np.ndarray,
    test_logits: np.ndarray,
    test_attributes: Sequence[Mapping[str, Any]],
    config: EvaluationConfig,
    positive_index: int = 1,
) -> EvaluationReport:
    """Temperature scaling fitted on validation logits, then :func:`evaluate` on the calibrated
    probabilities; the report carries the :class:`Calibration` (ECE before and after, on test)."""
    temperature = fit_temperature(val_labels, val_logits)
    val_scores = apply_temperature(val_logits, temperature)[:, positive_index]
    test_scores = apply_temperature(test_logits, temperature)[:, positive_index]
    report = evaluate(val_labels, val_scores, test_labels, test_scores, test_attributes, config)
    bins = config.calibration_bins
    before = apply_temperature(test_logits, 1.0)[:, positive_index]
    report.calibration = Calibration(
        temperature=temperature,
        ece_before=expected_calibration_error(test_labels, before, bins) if len(test_labels) else math.nan,
        ece_after=report.overall["ece"],
        val_nll_before=_nll(val_labels, val_logits, 1.0) if len(val_labels) else math.nan,
        val_nll_after=_nll(val_labels, val_logits, temperature) if len(val_labels) else math.nan,
    )
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
