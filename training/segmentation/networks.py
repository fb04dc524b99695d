"""MONAI 3D segmentation networks a config may name (trained from scratch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from training.segmentation.spec import SegmentationNetwork

__all__ = ["build_segmentation_network"]


def build_segmentation_network(
    network: SegmentationNetwork | str,
    *,
    num_classes: int,
    channels: Sequence[int] = (8, 16, 32, 64),
    dropout: float = 0.0,
) -> Any:
    """A freshly initialised network: input ``(B, 1, Z, Y, X)``, logits ``(B, num_classes, Z, Y, X)``.

    ``channels`` are the UNet's feature maps per level (each level halves the grid); for
    SwinUNETR the first entry, rounded up to a multiple of 12 (its attention heads), is the
    feature size.
    """
    from monai.networks import nets

    family = SegmentationNetwork(network)
    if family is SegmentationNetwork.UNET:
        return nets.UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=num_classes,
            channels=tuple(channels),
            strides=(2,) * (len(channels) - 1),
            num_res_units=1,
            norm="instance",
            dropout=dropout,
        )
    feature_size = max(12, -(-int(channels[0]) // 12) * 12)
    return nets.SwinUNETR(
        in_channels=1,
        out_channels=num_classes,
        feature_size=feature_size,
        spatial_dims=3,
        drop_rate=dropout,
    )
