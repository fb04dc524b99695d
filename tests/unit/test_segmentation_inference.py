"""training.segmentation.inference: resample, normalise, sliding window, back to the source grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imaging.volumes import assemble_series
from tests.seg_series import blob_labels, make_series
from training.segmentation.inference import SegmentationInferenceError, segment_volume
from training.segmentation.spec import SegmentationSpec


class ThresholdNet(torch.nn.Module):
    """Logits that say 'structure 1 where the normalised input is bright': an oracle for geometry."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x - 1.0) * 4
        rest = [torch.full_like(x, -10.0)] * (self.classes - 2)
        return torch.cat([torch.zeros_like(x), bright, *rest], dim=1)


def _volume(seed: int = 0):  # type: ignore[no-untyped-def]
    return assemble_series(make_series(slices=12, size=32, spacing=(3.0, 2.0, 2.0), seed=seed))


def test_labels_come_back_on_the_source_grid_where_the_structure_is() -> None:
    volume = _volume()
    spec = SegmentationSpec(labels={1: "blob"}, spacing=(4.0, 3.0, 3.0), roi_size=(8, 16, 16), network="unet")
    result = segment_volume(ThresholdNet(), volume, spec)
    assert result.labels.shape == volume.array.shape and result.labels.dtype == np.uint8
    assert result.model_grid == (9, 21, 21)  # same field of view at the model's spacing
    _, truth = blob_labels(make_series(slices=12, size=32, spacing=(3.0, 2.0, 2.0), seed=0))
    truth = truth > 0
    found = result.labels == 1
    dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
    assert dice > 0.85, dice
    assert result.voxel_counts == {"blob": int(found.sum())}
    assert result.volumes_ml["blob"] == pytest.approx(found.sum() * 3.0 * 2.0 * 2.0 / 1000, abs=1e-3)
    assert set(result.timings_ms) == {"preprocess", "sliding_window", "postprocess"}
    assert result.to_dict()["structures"][0]["name"] == "blob"


def test_untrained_unet_runs_at_any_grid_and_wrong_outputs_are_refused() -> None:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    volume = _volume(1)
    spec = SegmentationSpec(labels={1: "a", 2: "b"}, spacing=(3.0, 2.0, 2.0), roi_size=(8, 16, 16))
    net = UNet(3, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0).eval()
    result = segment_volume(net, volume, spec)
    assert result.labels.shape == volume.array.shape and int(result.labels.max()) <= 2
    assert sum(result.voxel_counts.values()) <= volume.array.size
    wrong = SegmentationSpec(labels={1: "a", 2: "b", 3: "c"}, spacing=(3.0, 2.0, 2.0), roi_size=(8, 16, 16))
    with pytest.raises(SegmentationInferenceError, match=r"expected \(1, 4, Z, Y, X\)"):
        segment_volume(net, volume, wrong)
