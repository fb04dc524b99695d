"""Temperature scaling: fitted on validation, judged on test; the served probability is the
calibrated one."""

from __future__ import annotations

import math

import numpy as np

from training.config import EvaluationConfig
from training.evaluation import (
    apply_temperature,
    evaluate_logits,
    expected_calibration_error,
    fit_temperature,
)


def _overconfident(n: int, seed: int, scale: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) but logits reported as scale * z: an overconfident model."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    logits = np.stack([np.zeros(n), scale * z], axis=1)
    return labels, logits


def test_fit_temperature_recovers_the_overconfidence() -> None:
    labels, logits = _overconfident(4000, 0)
    assert abs(fit_temperature(labels, logits) - 4.0) < 0.5
    assert fit_temperature(np.zeros(0, dtype=int), np.zeros((0, 2))) == 1.0


def test_a_separated_validation_split_leaves_the_temperature_alone() -> None:
    # Every image on its side of the boundary: the NLL falls without end as T -> 0, and a
    # fitted T would sharpen every served probability to 0 or 1 (it reached 0.054 in a demo run).
    labels = np.array([0] * 20 + [1] * 20)
    margin = np.r_[-np.linspace(0.5, 6, 20), np.linspace(0.5, 6, 20)]
    logits = np.stack([np.zeros(40), margin], axis=1)
    assert fit_temperature(labels, logits) == 1.0
    labels[0] = 1  # one image on the wrong side: an interior minimum exists again
    assert fit_temperature(labels, logits) != 1.0


def test_calibration_lowers_test_ece_and_keeps_the_ranking() -> None:
    val_labels, val_logits = _overconfident(600, 1)
    test_labels, test_logits = _overconfident(600, 2)
    attributes = [{"site": "a" if i % 2 else "b"} for i in range(600)]
    report = evaluate_logits(val_labels, val_logits, test_labels, test_logits, attributes, EvaluationConfig())
    calibration = report.calibration
    assert calibration is not None
    assert calibration.ece_after < calibration.ece_before
    assert calibration.ece_after == report.overall["ece"]
    assert calibration.val_nll_after < calibration.val_nll_before
    raw = apply_temperature(test_logits)[:, 1]
    assert math.isclose(calibration.ece_before, expected_calibration_error(test_labels, raw), rel_tol=1e-9)
    flat = report.flat_metrics()
    assert flat["calibration_temperature"] == calibration.temperature
    assert flat["test_ece_before_calibration"] == calibration.ece_before


def test_apply_temperature_is_a_stable_softmax() -> None:
    probabilities = apply_temperature(np.array([[0.0, 1000.0], [0.0, 0.0]]), 2.0)
    assert np.allclose(probabilities, [[0.0, 1.0], [0.5, 0.5]])
