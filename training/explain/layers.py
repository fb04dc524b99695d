"""Which layer Grad-CAM looks at, per MONAI network family.

Grad-CAM needs the last convolutional feature map that still has spatial extent. For the MONAI
classification networks RadGate trains, that layer is known by name; for anything else the layer
is found by one probing forward pass (the last module, in execution order, whose output is a
feature map with more than one voxel per spatial axis).
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import nn

__all__ = [
    "NetworkFamily",
    "TargetLayerError",
    "detect_family",
    "find_last_feature_layer",
    "resolve_target_layer",
]


class NetworkFamily(StrEnum):
    """MONAI classification network families with a known Grad-CAM layer."""

    DENSENET = "densenet"
    RESNET = "resnet"
    SENET = "senet"
    EFFICIENTNET = "efficientnet"
    OTHER = "other"


class TargetLayerError(LookupError):
    """No suitable target layer exists in the model, or the named one is missing."""


# Relative to the MONAI network module. DenseNet's post-norm5 ReLU is the feature map its
# classifier pools (torchvision's Grad-CAM convention); EfficientNet reuses one ``_swish``
# module at stem and head, so the head's batch norm is hooked instead.
_FAMILY_LAYERS: dict[NetworkFamily, str] = {
    NetworkFamily.DENSENET: "class_layers.relu",
    NetworkFamily.RESNET: "layer4",
    NetworkFamily.SENET: "layer4",
    NetworkFamily.EFFICIENTNET: "_bn1",
}


def _family_classes() -> list[tuple[type[nn.Module], NetworkFamily]]:
    from monai.networks import nets

    return [
        (nets.DenseNet, NetworkFamily.DENSENET),
        (nets.SENet, NetworkFamily.SENET),
        (nets.ResNet, NetworkFamily.RESNET),
        (nets.EfficientNet, NetworkFamily.EFFICIENTNET),
    ]


def detect_family(model: nn.Module) -> tuple[NetworkFamily, str]:
    """The family of the first MONAI network found in ``model`` and its qualified name.

    The prefix is ``""`` when ``model`` is the network itself and e.g. ``"net"`` when it is wrapped
    (a LightningModule, a normalisation wrapper...).
    """
    classes = _family_classes()
    for name, module in model.named_modules():
        for cls, family in classes:
            if isinstance(module, cls):
                return family, name
    return NetworkFamily.OTHER, ""


def _get_submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise TargetLayerError(f"the model has no layer named {name!r}") from exc


def find_last_feature_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the last module producing a spatial feature map, found by one forward pass.

    Modules called more than once in a forward (shared activations) are skipped: a hook on them
    would see several outputs.
    """
    spatial_dims = example.dim() - 2
    calls: dict[str, int] = {}
    order: list[str] = []
    handles = []

    def make_hook(name: str):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if (
                isinstance(output, torch.Tensor)
                and output.dim() == spatial_dims + 2
                and all(size > 1 for size in output.shape[2:])
            ):
                order.append(name)

        return hook

    for name, module in model.named_modules():
        if name and not list(module.children()):
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    for name in reversed(order):
        if calls[name] == 1:
            return name
    raise TargetLayerError("no module of this model outputs a spatial feature map")


def resolve_target_layer(
    model: nn.Module,
    example: torch.Tensor,
    *,
    family: NetworkFamily | str | None = None,
    override: str | None = None,
) -> tuple[str, nn.Module]:
    """The (qualified name, module) Grad-CAM hooks: ``override`` if given, else by family."""
    if override:
        return override, _get_submodule(model, override)
    detected, prefix = detect_family(model)
    chosen = NetworkFamily(family) if family is not None else detected
    relative = _FAMILY_LAYERS.get(chosen)
    if relative is not None and detected is chosen:
        name = f"{prefix}.{relative}" if prefix else relative
        return name, _get_submodule(model, name)
    name = find_last_feature_layer(model, example)
    return name, _get_submodule(model, name)
