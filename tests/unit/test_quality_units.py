"""Fast checks of the duplicate measures of the quality report."""

from __future__ import annotations

import numpy as np

from imaging.quality.pixels import correlation, hamming


def test_hamming_and_correlation() -> None:
    assert hamming("ff00", "ff01") == 1 and hamming("0" * 16, "f" * 16) == 64
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32)).astype(np.uint8)
    assert correlation(image, image) == 1.0
    assert correlation(image, (image * 0.5 + 20).astype(np.uint8)) > 0.99  # brightness/contrast
    assert abs(correlation(image, rng.integers(0, 255, (32, 32)).astype(np.uint8))) < 0.2
    assert correlation(np.zeros((4, 4)), image[:4, :4]) == 0.0
