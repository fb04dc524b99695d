"""Evaluation metrics, operating point, calibration and subgroup gaps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from training.config import EvaluationConfig, OperatingPoint
from training.evaluation import (
    binary_metrics,
    choose_threshold,
    evaluate,
    expected_calibration_error,
    save_plots,
)


def test_binary_metrics_known_values() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.6, 0.3, 0.7, 0.9])
    m = binary_metrics(labels, scores, threshold=0.5)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(2 / 3)
    assert m["auroc"] == pytest.approx(7 / 9)
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (2, 2, 1, 1)
    assert math.isnan(binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]), 0.5)["auroc"])


def test_threshold_choice() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.05, 0.1, 0.2, 0.55, 0.5, 0.6, 0.8, 0.9])
    youden = choose_threshold(labels, scores, OperatingPoint.YOUDEN)
    m = binary_metrics(labels, scores, youden)
    assert m["sensitivity"] + m["specificity"] - 1 == pytest.approx(0.75)
    # a separable split: the threshold lies strictly between the classes, not on a positive
    separable = choose_threshold(
        np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.9, 0.95]), OperatingPoint.YOUDEN
    )
    assert 0.3 < separable < 0.9
    odds = separable / (1 - separable)  # halfway in log-odds: odds of 0.3 and 0.9 averaged geometrically
    assert odds == pytest.approx(math.sqrt(0.3 / 0.7 * 0.9 / 0.1))
    # saturated scores: the threshold stays between the classes, not next to the positives
    saturated = choose_threshold(np.array([0, 1]), np.array([1e-9, 0.99]), OperatingPoint.YOUDEN)
    assert saturated < 0.5
    sensitive = choose_threshold(labels, scores, OperatingPoint.SENSITIVITY, target_sensitivity=1.0)
    assert binary_metrics(labels, scores, sensitive)["sensitivity"] == 1.0


def test_calibration_error() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=20000)
    calibrated = (rng.uniform(size=scores.size) < scores).astype(int)
    assert expected_calibration_error(calibrated, scores) < 0.02
    assert expected_calibration_error(np.zeros(100, int), np.full(100, 0.9)) == pytest.approx(0.9)


def test_subgroup_gaps_and_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 200
    labels = rng.integers(0, 2, n)
    site = np.where(np.arange(n) % 2 == 0, "A", "B")
    # Site A: informative scores; site B: noise -> a large AUROC gap.
    scores = np.where(site == "A", 0.2 + 0.6 * labels + rng.normal(0, 0.05, n), rng.uniform(size=n)).clip(
        0, 1
    )
    attrs = [
        {"site": s, "sex": "F" if i % 3 else "M", "manufacturer": "X", "age_band": "40-49"}
        for i, s in enumerate(site)
    ]
    report = evaluate(labels, scores, labels, scores, attrs, EvaluationConfig())
    assert report.subgroups["site"]["A"]["auroc"] > 0.95
    assert report.gaps["site"]["auroc"] > 0.3
    assert math.isnan(report.gaps["manufacturer"]["auroc"])  # one group: no gap
    assert report.largest_gap[0] == "site"
    flat = report.flat_metrics()
    assert "test_auroc" in flat and "subgroup_gap_site_auroc" in flat and "max_subgroup_gap" in flat
    assert [p.name for p in save_plots(report, tmp_path)] == ["reliability.png", "confusion_matrix.png"]
