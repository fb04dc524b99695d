"""One typed interface over Captum attribution methods.

``Explainer(model).explain(batch, method)`` returns maps with the input's spatial size, scaled
to [0, 1] per image, plus the class each map explains and the model's probabilities, from the
same forward pass where the method allows it (Grad-CAM, HiResCAM and Saliency: one forward, one
partial backward).

Grad-CAM (Selvaraju et al. 2017) weights a layer's channels by their spatially averaged gradient;
HiResCAM (Draelos and Carin 2020) multiplies gradient and activation element-wise before summing
the channels, so each cell keeps its own gradient: at a shallower, finer layer it still points at
the finding where Grad-CAM's averaged weights cancel. Both hook the layer the network family table
names for them (``training.networks.NETWORKS``).

Determinism: the model is put in eval mode, parameters are frozen for the call (which also keeps
autograd from recording the network below the Grad-CAM layer), and PyTorch's deterministic
algorithms are switched on for the duration of the call. Captum methods used here draw no random
numbers. The model's ``requires_grad`` flags and global deterministic setting are restored after
each call; one ``Explainer`` is not meant to be called from several threads at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from governance.strict import StrictModel
from training.explain.layers import NetworkFamily, resolve_target_layer

__all__ = [
    "ExplainConfig",
    "ExplainError",
    "ExplainMethod",
    "Explainer",
    "Explanation",
    "explain",
    "probabilities_from_logits",
]


class ExplainError(ValueError):
    """The inputs or targets cannot be explained as asked."""


class ExplainMethod(StrEnum):
    """Attribution methods; values are the CLI spellings."""

    GRADCAM = "gradcam"
    HIRESCAM = "hirescam"
    SALIENCY = "saliency"
    INTEGRATED_GRADIENTS = "ig"
    OCCLUSION = "occlusion"

    @property
    def display_name(self) -> str:
        return _TITLES[self]


_TITLES = {
    ExplainMethod.GRADCAM: "Grad-CAM",
    ExplainMethod.HIRESCAM: "HiResCAM",
    ExplainMethod.SALIENCY: "Saliency",
    ExplainMethod.INTEGRATED_GRADIENTS: "Integrated Gradients",
    ExplainMethod.OCCLUSION: "Occlusion",
}


class ExplainConfig(StrictModel):
    """Method parameters (YAML-loadable); defaults suit 224x224 inputs on CPU."""

    target_layer: str | None = Field(
        default=None, description="Qualified module name for Grad-CAM; default by network family."
    )
    hirescam_layer: str | None = Field(
        default=None, description="Qualified module name for HiResCAM; default by network family."
    )

    def layer_override(self, method: ExplainMethod) -> str | None:
        """The configured layer of a class-activation method (None: the family table's)."""
        return self.hirescam_layer if method is ExplainMethod.HIRESCAM else self.target_layer

    def with_layer(self, method: ExplainMethod, layer: str | None) -> ExplainConfig:
        """A copy with ``method``'s layer set to ``layer``."""
        key = "hirescam_layer" if method is ExplainMethod.HIRESCAM else "target_layer"
        return self.model_copy(update={key: layer})

    ig_steps: int = Field(default=32, ge=2, description="Integrated Gradients path steps.")
    ig_internal_batch_size: int = Field(default=16, ge=1)
    occlusion_window_fraction: float = Field(
        default=0.125, gt=0, le=1, description="Occluding patch side as a fraction of the input side."
    )
    occlusion_stride_fraction: float = Field(
        default=0.0625, gt=0, le=1, description="Patch stride as a fraction of the input side."
    )
    occlusion_batch: int = Field(default=16, ge=1, description="Occluded copies per forward pass.")
    clip_percentile: float = Field(
        default=99.5, gt=50, le=100, description="Gradient maps are clipped here before scaling."
    )


@dataclass(frozen=True)
class Explanation:
    """Attribution maps for a batch: ``maps[i]`` explains ``targets[i]`` for image ``i``."""

    method: ExplainMethod
    maps: np.ndarray  # (B, *spatial) float32 in [0, 1]
    targets: tuple[int, ...]
    probabilities: np.ndarray  # (B, K) float32; sigmoid when K == 1, else softmax
    target_layer: str | None = None
    label_names: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.targets)

    def target_probability(self, index: int) -> float:
        """Probability of the explained class (for a one-output model, of the positive class)."""
        column = 0 if self.probabilities.shape[1] == 1 else self.targets[index]
        return float(self.probabilities[index, column])

    def target_label(self, index: int) -> str:
        target = self.targets[index]
        if target < len(self.label_names):
            return self.label_names[target]
        return f"class {target}"


def probabilities_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid for a single-output model, softmax otherwise."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


@contextlib.contextmanager
def _explaining(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    model.eval()
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(was_training)


class _ScoreOfTarget(nn.Module):
    """Forward that returns one score per image (the target's logit) and keeps the logits.

    Letting the forward pick the predicted class spares Grad-CAM and Saliency the extra forward
    pass that choosing a target up front would cost.
    """

    def __init__(self, model: nn.Module, targets: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.targets = targets
        self.logits: torch.Tensor | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = self.model(inputs)
        if logits.dim() != 2:
            raise ExplainError(f"the model must return (batch, classes) logits, got {tuple(logits.shape)}")
        if self.targets is None:
            self.targets = (
                torch.zeros(len(logits), dtype=torch.long, device=logits.device)
                if logits.shape[1] == 1
                else logits.detach().argmax(dim=1)
            )
        if int(self.targets.max()) >= logits.shape[1]:
            raise ExplainError(f"target out of range for a model with {logits.shape[1]} outputs")
        self.logits = logits.detach()
        return logits.gather(1, self.targets.to(logits.device)[:, None]).squeeze(1)


def _scale_unit(maps: torch.Tensor, percentile: float | None) -> torch.Tensor:
    """Per-image scaling to [0, 1] (after optional clipping at a percentile); flat maps give 0."""
    flat = maps.flatten(1)
    if percentile is not None and percentile < 100:
        top = torch.quantile(flat, percentile / 100.0, dim=1, keepdim=True)
    else:
        top = flat.amax(dim=1, keepdim=True)
    span = top.clamp(min=torch.finfo(maps.dtype).tiny)  # maps here are >= 0
    scaled = (flat.clamp(min=0.0) / span).clamp(0.0, 1.0)
    scaled[(top <= 0).expand_as(scaled)] = 0.0
    return scaled.view_as(maps)


def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, 1, *s) -> (B, *size) by (bi|tri)linear interpolation."""
    if tuple(maps.shape[2:]) != tuple(size):
        mode = "bilinear" if len(size) == 2 else "trilinear"
        maps = F.interpolate(maps, size=tuple(size), mode=mode, align_corners=False)
    return maps[:, 0]


class Explainer:
    """Captum attributions for a classification model, one method per call.

    ``model`` takes (B, C, *spatial) tensors already preprocessed and returns (B, K) logits.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        family: NetworkFamily | str | None = None,
        config: ExplainConfig | None = None,
        label_names: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.family = NetworkFamily(family) if family is not None else None
        self.config = config or ExplainConfig()
        self.label_names = tuple(label_names)
        self._layers: dict[ExplainMethod, tuple[str, nn.Module]] = {}

    def target_layer(
        self, example: torch.Tensor, method: ExplainMethod = ExplainMethod.GRADCAM
    ) -> tuple[str, nn.Module]:
        """The layer ``method`` (Grad-CAM or HiResCAM) hooks, resolved once per method: the
        configured one, else by family, else by probing with ``example``."""
        if method not in self._layers:
            with _explaining(self.model):
                self._layers[method] = resolve_target_layer(
                    self.model,
                    example,
                    family=self.family,
                    override=self.config.layer_override(method),
                    method=method.value,
                )
        return self._layers[method]

    def explain(
        self,
        inputs: torch.Tensor,
        method: ExplainMethod | str = ExplainMethod.GRADCAM,
        target: int | Sequence[int] | torch.Tensor | None = None,
    ) -> Explanation:
        """Maps for ``inputs`` (B, C, *spatial); ``target`` None explains the predicted class."""
        method = ExplainMethod(method)
        if inputs.dim() not in (4, 5):
            raise ExplainError(f"expected (batch, channels, *spatial) input, got {tuple(inputs.shape)}")
        parameter = next(self.model.parameters(), None)
        inputs = inputs.detach().float().to(parameter.device if parameter is not None else inputs.device)
        targets = self._targets(target, len(inputs), inputs.device)
        runner: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor, str | None]]
        runner = {
            ExplainMethod.GRADCAM: self._gradcam,
            ExplainMethod.HIRESCAM: self._hirescam,
            ExplainMethod.SALIENCY: self._saliency,
            ExplainMethod.INTEGRATED_GRADIENTS: self._integrated_gradients,
            ExplainMethod.OCCLUSION: self._occlusion,
        }[method]
        with _explaining(self.model):
            maps, logits, layer_name = runner(inputs, targets)
        chosen = self._chosen_targets(logits, targets)
        return Explanation(
            method=method,
            maps=maps.detach().cpu().float().numpy(),
            targets=tuple(int(t) for t in chosen),
            probabilities=probabilities_from_logits(logits.float()).cpu().numpy(),
            target_layer=layer_name,
            label_names=self.label_names,
        )

    # -- targets --------------------------------------------------------------------------------

    def _targets(
        self, target: int | Sequence[int] | torch.Tensor | None, batch: int, device: torch.device
    ) -> torch.Tensor | None:
        if target is None:
            return None
        if isinstance(target, int):
            values = torch.full((batch,), target, dtype=torch.long)
        else:
            values = torch.as_tensor(target, dtype=torch.long).flatten()
            if len(values) != batch:
                raise ExplainError(f"{len(values)} targets for a batch of {batch}")
        if (values < 0).any():
            raise ExplainError("targets must be non-negative class indices")
        return values.to(device)

    @staticmethod
    def _chosen_targets(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        if targets is not None:
            if int(targets.max()) >= logits.shape[1]:
                raise ExplainError(f"target out of range for a model with {logits.shape[1]} outputs")
            return targets
        if logits.shape[1] == 1:
            return torch.zeros(len(logits), dtype=torch.long)
        return logits.argmax(dim=1)

    def _predict(
        self, inputs: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = self.model(inputs)
        return logits, self._chosen_targets(logits, targets)

    # -- methods --------------------------------------------------------------------------------

    def _gradcam(
        self, inputs: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        from captum.attr import LayerGradCam

        name, layer = self.target_layer(inputs)
        scorer = _ScoreOfTarget(self.model, targets)
        cam = LayerGradCam(scorer, layer).attribute(inputs, relu_attributions=True)
        assert scorer.logits is not None
        maps = _upsample(cam.float(), inputs.shape[2:])
        return _scale_unit(maps, None), scorer.logits, name

    def _hirescam(
        self, inputs: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        from captum.attr import LayerGradientXActivation

        name, layer = self.target_layer(inputs, ExplainMethod.HIRESCAM)
        scorer = _ScoreOfTarget(self.model, targets)
        products = LayerGradientXActivation(scorer, layer).attribute(inputs)
        assert scorer.logits is not None
        # Sum over channels, keep the cells that raise the score (as Grad-CAM's ReLU does).
        cam = products.float().sum(dim=1, keepdim=True).clamp(min=0.0)
        maps = _upsample(cam, inputs.shape[2:])
        return _scale_unit(maps, None), scorer.logits, name

    def _saliency(
        self, inputs: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        from captum.attr import Saliency

        scorer = _ScoreOfTarget(self.model, targets)
        grads = Saliency(scorer).attribute(inputs.clone().requires_grad_(), abs=True)
        assert scorer.logits is not None
        maps = grads.amax(dim=1)  # Simonyan et al.: max |gradient| over channels
        return _scale_unit(maps, self.config.clip_percentile), scorer.logits, None

    def _integrated_gradients(
        self, inputs: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        from captum.attr import IntegratedGradients

        logits, chosen = self._predict(inputs, targets)
        attributions = IntegratedGradients(self.model).attribute(
            inputs,
            baselines=torch.zeros_like(inputs),
            target=chosen,
            n_steps=self.config.ig_steps,
            internal_batch_size=self.config.ig_internal_batch_size,
        )
        maps = attributions.sum(dim=1).abs()
        return _scale_unit(maps, self.config.clip_percentile), logits, None

    def _occlusion(
        self, inputs: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        from captum.attr import Occlusion

        logits, chosen = self._predict(inputs, targets)
        spatial = inputs.shape[2:]
        window = tuple(max(1, round(s * self.config.occlusion_window_fraction)) for s in spatial)
        stride = tuple(max(1, round(s * self.config.occlusion_stride_fraction)) for s in spatial)
        attributions = Occlusion(self.model).attribute(
            inputs,
            sliding_window_shapes=(inputs.shape[1], *window),
            strides=(inputs.shape[1], *stride),
            baselines=0.0,
            target=chosen,
            perturbations_per_eval=self.config.occlusion_batch,
        )
        # Positive: occluding the region lowered the target's score.
        maps = attributions.mean(dim=1).clamp(min=0.0)
        return _scale_unit(maps, None), logits, None


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    method: ExplainMethod | str = ExplainMethod.GRADCAM,
    target: int | Sequence[int] | torch.Tensor | None = None,
    *,
    family: NetworkFamily | str | None = None,
    config: ExplainConfig | None = None,
    label_names: Sequence[str] = (),
) -> Explanation:
    """One-shot form of ``Explainer(model, ...).explain(inputs, method, target)``."""
    return Explainer(model, family=family, config=config, label_names=label_names).explain(
        inputs, method, target
    )
