"""Drift tests of live features against a reference profile, with multiple-testing correction.

Per feature: two-sample Kolmogorov-Smirnov for continuous features (effect: the statistic D);
chi-square on the 2 x K contingency table for categorical features (effect: population stability
index, PSI, and Cramer's V in the details); for the PCA-projected penultimate embedding, the
unbiased squared MMD with an RBF kernel (median-heuristic bandwidth) and a permutation p-value
(effect: MMD^2). The p-values of one check are corrected together (Benjamini-Hochberg or Holm);
a feature drifts when its corrected p-value is below ``alpha`` and its effect reaches the
configured minimum (a significant but negligible shift on a large window is not an alert).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from serving.monitoring.config import Correction, DriftSettings
from training.reference_profile import (
    CATEGORICAL_FEATURES,
    CONTINUOUS_FEATURES,
    FeatureKind,
    ReferenceProfile,
)

__all__ = [
    "DriftResult",
    "FeatureTest",
    "adjust_pvalues",
    "categorical_test",
    "compare",
    "ks_test",
    "mmd_test",
]

EMBEDDING_FEATURE = "embedding"
_PSI_EPS = 1e-4


@dataclass
class FeatureTest:
    """One feature's test: statistic, raw and corrected p-value, effect size and verdict."""

    feature: str
    kind: str
    test: str
    statistic: float
    p_value: float
    effect: float
    effect_name: str
    min_effect: float
    n_reference: int
    n_live: int
    p_adjusted: float = 1.0
    drifted: bool = False
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("statistic", "p_value", "effect", "p_adjusted"):
            value = data[key]
            data[key] = None if value is None or not math.isfinite(value) else float(value)
        return data


@dataclass
class DriftResult:
    """Every feature's test of one check and the overall verdict."""

    tests: list[FeatureTest]
    n_live: int
    n_reference: int
    correction: str
    alpha: float
    insufficient: bool = False

    @property
    def drifted_features(self) -> list[str]:
        return [t.feature for t in self.tests if t.drifted]

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_live": self.n_live,
            "n_reference": self.n_reference,
            "correction": self.correction,
            "alpha": self.alpha,
            "insufficient_data": self.insufficient,
            "drifted": self.drifted,
            "drifted_features": self.drifted_features,
            "tests": [t.to_dict() for t in self.tests],
        }


def adjust_pvalues(p_values: Sequence[float], method: Correction | str) -> list[float]:
    """Benjamini-Hochberg (``bh``) or Holm (``holm``) adjusted p-values, in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p)
    ranked = p[order]
    if Correction(method) is Correction.BH:
        scaled = ranked * m / np.arange(1, m + 1)
        adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    else:
        scaled = ranked * (m - np.arange(m))
        adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = np.clip(adjusted, 0.0, 1.0)
    return [float(v) for v in out]


def ks_test(reference: Sequence[float], live: Sequence[float]) -> tuple[float, float, dict[str, Any]]:
    """Two-sample KS: (D, p-value, details with means and the standardised mean difference)."""
    ref, cur = np.asarray(reference, dtype=np.float64), np.asarray(live, dtype=np.float64)
    result = stats.ks_2samp(ref, cur)
    pooled = math.sqrt((ref.var() + cur.var()) / 2)
    smd = float((cur.mean() - ref.mean()) / pooled) if pooled > 0 else 0.0
    details = {
        "reference_mean": float(ref.mean()),
        "live_mean": float(cur.mean()),
        "standardized_mean_difference": smd,
    }
    return float(result.statistic), float(result.pvalue), details


def categorical_test(
    reference: Mapping[str, int], live: Mapping[str, int]
) -> tuple[float, float, float, dict[str, Any]]:
    """Chi-square on the 2 x K table: (chi2, p-value, PSI, details with proportions and Cramer's V)."""
    categories = sorted(set(reference) | set(live))
    ref = np.array([reference.get(c, 0) for c in categories], dtype=np.float64)
    cur = np.array([live.get(c, 0) for c in categories], dtype=np.float64)
    ref_p = ref / max(ref.sum(), 1)
    cur_p = cur / max(cur.sum(), 1)
    psi = float(np.sum((cur_p - ref_p) * np.log(np.maximum(cur_p, _PSI_EPS) / np.maximum(ref_p, _PSI_EPS))))
    details: dict[str, Any] = {
        "reference_proportions": {c: float(v) for c, v in zip(categories, ref_p, strict=True)},
        "live_proportions": {c: float(v) for c, v in zip(categories, cur_p, strict=True)},
        "new_categories": [c for c in categories if reference.get(c, 0) == 0],
    }
    if len(categories) < 2:
        details["cramers_v"] = 0.0
        return 0.0, 1.0, psi, details
    chi2, p_value, _, _ = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    n = ref.sum() + cur.sum()
    details["cramers_v"] = float(math.sqrt(chi2 / n)) if n > 0 else 0.0
    return float(chi2), float(p_value), psi, details


def _quadratic(k: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise a_p^T K b_p for indicator matrices ``a``, ``b`` of shape (P, N)."""
    return np.einsum("pn,pn->p", a @ k, b)


def mmd_test(
    reference: np.ndarray,
    live: np.ndarray,
    *,
    permutations: int = 200,
    max_samples: int = 300,
    seed: int = 0,
) -> tuple[float, float, dict[str, Any]]:
    """Unbiased squared MMD (RBF kernel, median-heuristic bandwidth) and its permutation p-value."""
    rng = np.random.default_rng(seed)
    x = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    y = np.atleast_2d(np.asarray(live, dtype=np.float64))
    if len(x) > max_samples:
        x = x[rng.choice(len(x), max_samples, replace=False)]
    if len(y) > max_samples:
        y = y[rng.choice(len(y), max_samples, replace=False)]
    n, m = len(x), len(y)
    z = np.vstack([x, y])
    sq = np.sum(z**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    positive = d2[np.triu_indices(len(z), k=1)]
    positive = positive[positive > 0]
    bandwidth2 = float(np.median(positive)) if positive.size else 1.0
    kernel = np.exp(-d2 / (2 * bandwidth2))
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimator leaves out i == j

    def mmd2(ix: np.ndarray) -> np.ndarray:
        iy = 1.0 - ix
        return (
            _quadratic(kernel, ix, ix) / (n * (n - 1))
            + _quadratic(kernel, iy, iy) / (m * (m - 1))
            - 2 * _quadratic(kernel, ix, iy) / (n * m)
        )

    observed_ix = np.zeros((1, n + m))
    observed_ix[0, :n] = 1.0
    observed = float(mmd2(observed_ix)[0])
    perm_ix = np.zeros((permutations, n + m))
    for row in range(permutations):
        perm_ix[row, rng.permutation(n + m)[:n]] = 1.0
    null = mmd2(perm_ix)
    p_value = float((1 + np.sum(null >= observed)) / (1 + permutations))
    details = {
        "bandwidth": math.sqrt(bandwidth2),
        "permutations": permutations,
        "n_reference_used": n,
        "n_live_used": m,
        "null_mean": float(null.mean()),
        "null_p95": float(np.percentile(null, 95)),
    }
    return observed, p_value, details


def compare(
    profile: ReferenceProfile,
    live_rows: Sequence[Mapping[str, Any]],
    live_embeddings: np.ndarray | Sequence[Sequence[float]],
    settings: DriftSettings,
) -> DriftResult:
    """Test every monitored feature of ``live_rows`` against ``profile`` and correct the p-values."""
    n_live = len(live_rows)
    tests: list[FeatureTest] = []
    effect = settings.min_effect
    for name in CONTINUOUS_FEATURES:
        ref = profile.continuous.get(name, [])
        cur = [float(r[name]) for r in live_rows if r.get(name) is not None]
        test = FeatureTest(
            name, FeatureKind.CONTINUOUS, "ks", math.nan, 1.0, 0.0, "ks_d", effect.ks, len(ref), len(cur)
        )
        if len(ref) < 2 or len(cur) < settings.min_samples:
            test.skipped = "insufficient data"
        else:
            test.statistic, test.p_value, test.details = ks_test(ref, cur)
            test.effect = test.statistic
        tests.append(test)
    for name in CATEGORICAL_FEATURES:
        ref_counts = profile.categorical.get(name, {})
        cur_counts = Counter(str(r.get(name) or "unknown") for r in live_rows)
        test = FeatureTest(
            name,
            FeatureKind.CATEGORICAL,
            "chi2",
            math.nan,
            1.0,
            0.0,
            "psi",
            effect.psi,
            sum(ref_counts.values()),
            sum(cur_counts.values()),
        )
        if not ref_counts or n_live < settings.min_samples:
            test.skipped = "insufficient data"
        else:
            test.statistic, test.p_value, test.effect, test.details = categorical_test(ref_counts, cur_counts)
        tests.append(test)
    reference_embedding = np.asarray(profile.embedding_reference, dtype=np.float64)
    live_embedding = np.asarray(live_embeddings, dtype=np.float64).reshape(n_live, -1)
    test = FeatureTest(
        EMBEDDING_FEATURE,
        FeatureKind.EMBEDDING,
        "mmd",
        math.nan,
        1.0,
        0.0,
        "mmd2",
        effect.mmd,
        len(reference_embedding),
        n_live,
    )
    if len(reference_embedding) < 2 or n_live < max(settings.min_samples, 2):
        test.skipped = "insufficient data"
    elif live_embedding.shape[1] != reference_embedding.shape[1]:
        test.skipped = "embedding dimensions differ from the reference"
    else:
        test.statistic, test.p_value, test.details = mmd_test(
            reference_embedding,
            live_embedding,
            permutations=settings.permutations,
            max_samples=settings.max_mmd_samples,
            seed=settings.seed,
        )
        test.effect = test.statistic
    tests.append(test)
    active = [t for t in tests if t.skipped is None]
    for t, adjusted in zip(
        active, adjust_pvalues([t.p_value for t in active], settings.correction), strict=True
    ):
        t.p_adjusted = adjusted
        t.drifted = adjusted < settings.alpha and t.effect >= t.min_effect
    return DriftResult(
        tests=tests,
        n_live=n_live,
        n_reference=profile.n_images,
        correction=str(settings.correction),
        alpha=settings.alpha,
        insufficient=n_live < settings.min_samples,
    )
