"""Pointing game, saliency mass in the mask, and the data (label) randomisation check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.explain.core import ExplainMethod
from training.explain.localization import label_randomization_check, pointing_game, resize_masks
from training.networks import build_network


def test_pointing_game_hits_misses_and_mass() -> None:
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[:, 4:6, 4:6] = True
    maps = np.zeros((2, 16, 16), dtype=np.float32)
    maps[0, 5, 5] = 1.0  # on the lesion
    maps[1, 12, 12] = 1.0  # far from it
    maps[1, 4, 4] = 0.5
    result = pointing_game(maps, masks, tolerance=1)
    assert result.per_image_hit == (True, False) and result.pointing_game == 0.5
    assert result.mean_mass_in_mask == pytest.approx((1.0 + 0.5 / 1.5) / 2)
    near = np.zeros((1, 16, 16), dtype=np.float32)
    near[0, 7, 5] = 1.0  # two pixels off: a hit only within the tolerance
    assert pointing_game(near, masks[:1], tolerance=2).hits == 1
    assert pointing_game(near, masks[:1], tolerance=1).hits == 0
    with pytest.raises(ValueError, match="shape"):
        pointing_game(maps, masks[:, :8])


def test_resize_masks_keeps_small_lesions() -> None:
    masks = np.zeros((1, 128, 128), dtype=bool)
    masks[0, 60:64, 60:64] = True
    resized = resize_masks(masks, (64, 64))
    assert resized.shape == (1, 64, 64) and resized[0, 30:32, 30:32].all()


def test_label_randomization_compares_two_models() -> None:
    torch.manual_seed(0)
    images = torch.rand(3, 1, 64, 64)
    first = build_network("resnet10-lite", num_classes=2).eval()
    # Saliency: an untrained network's Grad-CAM of one class may be all zero (flat maps rank nothing).
    same = label_randomization_check(first, first, images, method=ExplainMethod.SALIENCY, threshold=0.5)
    assert same.spearman == pytest.approx(1.0) and same.status == "failed"
    torch.manual_seed(1)
    other = build_network("resnet10-lite", num_classes=2).eval()
    different = label_randomization_check(first, other, images, method=ExplainMethod.SALIENCY, threshold=0.5)
    assert different.spearman < same.spearman and different.images == 3
