"""Which layer Grad-CAM looks at, per MONAI network family.

Grad-CAM needs the last convolutional feature map that still has spatial extent. For the MONAI
classification networks RadGate trains, that layer is known by name in the one table of networks
(``training.networks.NETWORKS``); for anything else the layer is found by one probing forward
pass (the last module, in execution order, whose output is a feature map with more than one
voxel per spatial axis).
"""

from __future__ import annotations

import torch
from torch import nn

from training.networks import NETWORKS, NetworkFamily
from training.networks import detect_family as _detect_spec

__all__ = [
    "NetworkFamily",
    "TargetLayerError",
    "detect_family",
    "find_last_feature_layer",
    "overlay_method",
    "resolve_target_layer",
]


class TargetLayerError(LookupError):
    """No suitable target layer exists in the model, or the named one is missing."""


def detect_family(model: nn.Module) -> tuple[NetworkFamily | None, str]:
    """The family (``training.networks.NETWORKS``, the one table) of the first MONAI network found
    in ``model`` and its qualified name: ``""`` when ``model`` is the network itself, e.g.
    ``"net"`` when it is wrapped. ``(None, "")`` when ``model`` holds none of them. Families of
    one MONAI class (resnet18/34/50) share their Grad-CAM layer: the first of them is named."""
    spec, prefix = _detect_spec(model)
    return (spec.family if spec is not None else None), prefix


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


def overlay_method(model: nn.Module, family: NetworkFamily | str | None = None) -> str:
    """The attribution method (an ``ExplainMethod`` value) shown on this model's results and
    checked as its evidence: the table's ``overlay`` for its family, else ``gradcam``."""
    spec = NETWORKS[NetworkFamily(family)] if family is not None else _detect_spec(model)[0]
    return spec.overlay if spec is not None else "gradcam"


def resolve_target_layer(
    model: nn.Module,
    example: torch.Tensor,
    *,
    family: NetworkFamily | str | None = None,
    override: str | None = None,
    method: str = "gradcam",
) -> tuple[str, nn.Module]:
    """The (qualified name, module) a class-activation ``method`` (``gradcam``, ``hirescam``)
    hooks: ``override`` if given, else the family table's layer for the method, else the last
    feature map found by probing."""
    if override:
        return override, _get_submodule(model, override)
    detected, prefix = _detect_spec(model)
    wanted = NETWORKS[NetworkFamily(family)] if family is not None else detected
    if detected is not None and wanted is not None and wanted.monai_class == detected.monai_class:
        layer = wanted.cam_layer(method)
        name = f"{prefix}.{layer}" if prefix else layer
        return name, _get_submodule(model, name)
    name = find_last_feature_layer(model, example)
    return name, _get_submodule(model, name)
