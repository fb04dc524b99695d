"""training.explain.segmentation: structure attribution (Grad-CAM, occlusion) on 3D volumes,
slices as PNG overlays, parameter-randomisation sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imaging.volumes import assemble_series
from tests.seg_series import blob_labels, make_series
from training.explain.segmentation import (
    decoder_layer,
    explain_structure,
    render_slices,
    segmentation_sanity_check,
)
from training.segmentation.inference import segment_volume
from training.segmentation.spec import SegmentationSpec

SPEC = SegmentationSpec(labels={1: "blob"}, spacing=(3.0, 3.0, 3.0), roi_size=(12, 24, 24))


class BrightBlobNet(torch.nn.Module):
    """A network 'trained' by construction: smoothed brightness thresholds -> blob logit."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.head = torch.nn.Conv3d(4, 2, 1)
        with torch.no_grad():
            self.features.weight.fill_(1 / 27)
            assert self.features.bias is not None
            self.features.bias.copy_(torch.tensor([-1.0, -1.5, -2.0, -2.5]))
            self.head.weight.zero_()
            self.head.weight[1].fill_(2.0)
            assert self.head.bias is not None
            self.head.bias.copy_(torch.tensor([0.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)))


@pytest.fixture(scope="module")
def case():  # type: ignore[no-untyped-def]
    series = make_series(slices=12, size=24, spacing=(3.0, 3.0, 3.0), seed=21)
    volume = assemble_series(series)
    _, truth = blob_labels(series)
    net = BrightBlobNet().eval()
    labels = segment_volume(net, volume, SPEC).labels
    found, blob = labels == 1, truth > 0
    assert 2 * (found & blob).sum() / (found.sum() + blob.sum()) > 0.9  # the net does segment
    return volume, net, labels, blob


def test_gradcam_and_occlusion_point_at_the_structure(case) -> None:  # type: ignore[no-untyped-def]
    volume, net, labels, blob = case
    assert decoder_layer(net, torch.zeros(1, 1, *SPEC.roi_size)) == "features"
    for method in ("gradcam", "occlusion"):
        explanation = explain_structure(net, volume, SPEC, "blob", method=method, labels=labels)
        attribution = explanation.attribution
        assert attribution.shape == volume.array.shape
        assert attribution.min() >= 0 and attribution.max() == pytest.approx(1.0)
        assert attribution[blob].mean() > 3 * attribution[~blob].mean(), method
    with pytest.raises(ValueError, match="the model segments blob"):
        explain_structure(net, volume, SPEC, "liver")


def test_slices_render_as_png_overlays(case) -> None:  # type: ignore[no-untyped-def]
    volume, net, labels, blob = case
    explanation = explain_structure(net, volume, SPEC, 1, labels=labels)
    pngs = render_slices(volume, explanation, model_name="brain-seg", model_version="2", count=2)
    assert len(pngs) == 2 and all(png.startswith(b"\x89PNG") for _, png in pngs)
    busiest = {int(z) for z in np.argsort(-blob.sum(axis=(1, 2)))[:4]}
    assert {z for z, _ in pngs} <= busiest  # the slices through the structure


def test_sanity_check_separates_trained_from_randomised(case) -> None:  # type: ignore[no-untyped-def]
    volume, net, labels, _ = case
    result = segmentation_sanity_check(net, volume, SPEC, "blob", labels=labels, threshold=0.5)
    assert result.control_spearman > 0.95
    assert result.spearman < result.control_spearman - 0.3
    assert result.to_dict()["passed"] == result.passed
