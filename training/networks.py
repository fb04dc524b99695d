"""Network factory: the MONAI 2D classifiers a training config may name."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = ["NetworkFamily", "build_network", "gradcam_layer"]


class NetworkFamily(StrEnum):
    """Networks a config may choose (MONAI implementations, 2D, trained from scratch)."""

    DENSENET121 = "densenet121"
    RESNET18 = "resnet18"
    RESNET34 = "resnet34"
    RESNET50 = "resnet50"
    EFFICIENTNET_B0 = "efficientnet-b0"


#: Module name (``dict(model.named_modules())[name]``) of the last convolutional block,
#: the usual Grad-CAM target layer for each family.
_GRADCAM_LAYERS = {
    NetworkFamily.DENSENET121: "features.denseblock4",
    NetworkFamily.RESNET18: "layer4",
    NetworkFamily.RESNET34: "layer4",
    NetworkFamily.RESNET50: "layer4",
    NetworkFamily.EFFICIENTNET_B0: "_conv_head",
}


def gradcam_layer(family: NetworkFamily | str) -> str:
    """The Grad-CAM target layer name for a network family."""
    return _GRADCAM_LAYERS[NetworkFamily(family)]


def build_network(
    family: NetworkFamily | str, *, num_classes: int, in_channels: int = 1, dropout: float = 0.0
) -> Any:
    """A freshly initialised 2D MONAI classifier returning logits ``[N, num_classes]``."""
    from monai.networks import nets

    family = NetworkFamily(family)
    if family is NetworkFamily.DENSENET121:
        return nets.DenseNet121(
            spatial_dims=2, in_channels=in_channels, out_channels=num_classes, dropout_prob=dropout
        )
    if family in (NetworkFamily.RESNET18, NetworkFamily.RESNET34, NetworkFamily.RESNET50):
        factory = getattr(nets, str(family))
        # conv1_t_stride=2 matches torchvision's stem (FIELD-NOTES: 4x faster, same accuracy).
        return factory(
            spatial_dims=2,
            n_input_channels=in_channels,
            num_classes=num_classes,
            conv1_t_stride=2,
            conv1_t_size=7,
        )
    return nets.EfficientNetBN(
        str(family),
        pretrained=False,
        spatial_dims=2,
        in_channels=in_channels,
        num_classes=num_classes,
    )
