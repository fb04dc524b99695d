"""Drift statistics on synthetic feature windows (fixed seeds): shifts are detected on the right
feature, unshifted windows stay within the configured false-alarm rate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from serving.monitoring.config import Correction, DriftSettings, MonitoringConfigError, parse_window
from serving.monitoring.drift import adjust_pvalues, categorical_test, compare, ks_test, mmd_test
from training.reference_profile import ReferenceProfile, live_feature_row, profile_from_rows

LABELS = ["no_finding", "opacity"]
_CENTRES = np.random.default_rng(99).normal(0, 1, size=(2, 32))


def _case(
    rng: np.random.Generator, *, gain: float = 1.0, manufacturer: str | None = None, prevalence: float = 0.3
) -> tuple[dict[str, Any], np.ndarray]:
    positive = rng.random() < prevalence
    image = rng.gamma(4.0, 250.0 * gain, size=(16, 16))
    vendor = manufacturer or str(rng.choice(["SIEMENS", "GE", "PHILIPS"], p=[0.5, 0.3, 0.2]))
    attributes = {"manufacturer": vendor, "manufacturer_model": vendor + "-1", "modality": "DX",
                  "site": str(rng.choice(["SITE-A", "SITE-B"])), "body_part": "CHEST",
                  "kvp": float(rng.normal(120, 5)), "pixel_spacing": 0.2}  # fmt: skip
    score = float(np.clip(rng.beta(6, 2) if positive else rng.beta(2, 6), 0, 1))
    row = live_feature_row(image, attributes, [1 - score, score], LABELS)
    embedding = _CENTRES[int(positive)] + rng.normal(0, 1.0, size=32)
    return row, embedding


def _window(seed: int, n: int, **shift: Any) -> tuple[list[dict[str, Any]], np.ndarray]:
    rng = np.random.default_rng(seed)
    cases = [_case(rng, **shift) for _ in range(n)]
    return [c[0] for c in cases], np.array([c[1] for c in cases])


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    rows, embeddings = _window(0, 400)
    return profile_from_rows(rows, embeddings, LABELS, embedding_dims=8)


SETTINGS = DriftSettings(min_samples=30, alpha=0.01, permutations=2000)


def _live(
    profile: ReferenceProfile, seed: int, n: int = 80, **shift: Any
) -> tuple[list[dict[str, Any]], Any]:
    rows, embeddings = _window(seed, n, **shift)
    return rows, profile.project(embeddings)


def test_bh_matches_scipy_and_holm_is_step_down() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    assert adjust_pvalues(p, Correction.BH) == pytest.approx(list(stats.false_discovery_control(p)))
    # Holm: sorted p * (m, m-1, ...), made monotone, in the input order
    assert adjust_pvalues(p, Correction.HOLM) == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.5])
    assert adjust_pvalues([], "bh") == []


def test_single_tests_separate_shift_from_noise() -> None:
    rng = np.random.default_rng(1)
    d, p, details = ks_test(rng.normal(0, 1, 300).tolist(), rng.normal(0.8, 1, 100).tolist())
    assert p < 1e-6 and d > 0.25 and details["standardized_mean_difference"] > 0.5
    _, p_null, _ = ks_test(rng.normal(0, 1, 300).tolist(), rng.normal(0, 1, 100).tolist())
    assert p_null > 0.01
    _, p_cat, psi, cat = categorical_test({"A": 60, "B": 40}, {"A": 5, "B": 5, "NEW": 40})
    assert p_cat < 1e-6 and psi > 1 and cat["new_categories"] == ["NEW"]
    mmd, p_mmd, _ = mmd_test(rng.normal(0, 1, (200, 4)), rng.normal(0.7, 1, (60, 4)), permutations=100)
    assert p_mmd < 0.02 and mmd > 0
    _, p_mmd_null, _ = mmd_test(rng.normal(0, 1, (200, 4)), rng.normal(0, 1, (60, 4)), permutations=100)
    assert p_mmd_null > 0.05


def test_intensity_shift_is_detected_on_intensity_features(profile: ReferenceProfile) -> None:
    rows, emb = _live(profile, 10, gain=1.6)
    result = compare(profile, rows, emb, SETTINGS)
    assert {"intensity_mean", "intensity_p50", "intensity_p95"} <= set(result.drifted_features)
    assert "manufacturer" not in result.drifted_features


def test_new_manufacturer_is_detected(profile: ReferenceProfile) -> None:
    rows, emb = _live(profile, 11, manufacturer="NOVAVISION")
    result = compare(profile, rows, emb, SETTINGS)
    assert {"manufacturer", "manufacturer_model"} <= set(result.drifted_features)
    test = next(t for t in result.tests if t.feature == "manufacturer")
    assert test.details["new_categories"] == ["NOVAVISION"] and test.effect >= SETTINGS.min_effect.psi


def test_label_prevalence_change_is_detected_in_scores_and_embedding(profile: ReferenceProfile) -> None:
    rows, emb = _live(profile, 12, n=120, prevalence=0.8)
    result = compare(profile, rows, emb, SETTINGS)
    assert {"score", "predicted_label", "embedding"} <= set(result.drifted_features)
    assert not any(f.startswith("intensity") for f in result.drifted_features)


def test_unshifted_windows_stay_within_the_false_alarm_rate(profile: ReferenceProfile) -> None:
    windows = 40
    settings = SETTINGS.model_copy(update={"permutations": 500})  # the null rate does not need the tail
    flagged = sum(compare(profile, *_live(profile, 1000 + i, n=60), settings).drifted for i in range(windows))
    # BH at alpha controls the FDR, which equals the family-wise rate under the global null:
    # P(any flag) <= alpha per window. Allow the binomial's upper tail (P(X >= 3) < 1% at 1%).
    assert flagged <= 2, f"{flagged}/{windows} unshifted windows flagged"


def test_too_few_live_samples_is_reported_not_alarmed(profile: ReferenceProfile) -> None:
    rows, emb = _live(profile, 13, n=10, gain=2.0)
    result = compare(profile, rows, emb, SETTINGS)
    assert result.insufficient and not result.drifted
    assert all(t.skipped == "insufficient data" for t in result.tests)


def test_profile_round_trips_through_json(profile: ReferenceProfile) -> None:
    again = ReferenceProfile.from_dict(profile.to_dict())
    assert again.continuous == profile.continuous and again.categorical == profile.categorical
    x = np.random.default_rng(5).normal(size=(3, 32))
    assert np.allclose(again.project(x), profile.project(x))
    with pytest.raises(ValueError):
        profile.project(np.zeros(7))


def test_window_parsing() -> None:
    assert parse_window("1d").total_seconds() == 86400
    assert parse_window("30m").total_seconds() == 1800
    for bad in ("", "0d", "1y", "d"):
        with pytest.raises(MonitoringConfigError):
            parse_window(bad)
