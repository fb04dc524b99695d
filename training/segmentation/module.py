"""The Lightning module for 3D segmentation: DiceCE loss on patches, sliding-window validation.

Runs in one plain Lightning process or inside each Ray Train worker (``training.launch``);
logs ``train_loss``, ``val_loss``, ``val_dice`` (mean over structures) and
``val_dice_<structure>`` each epoch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from training.module import SupervisedModule
from training.segmentation.data import IMAGE_KEY, LABEL_KEY
from training.segmentation.networks import build_segmentation_network
from training.segmentation.spec import SegmentationSpec

__all__ = ["SegmentationModule", "metric_name", "sliding_window_logits"]


def metric_name(structure: str) -> str:
    """A structure name as an MLflow metric-name suffix (lower case, ``[a-z0-9_]``)."""
    return re.sub(r"[^a-z0-9]+", "_", structure.lower()).strip("_") or "structure"


def sliding_window_logits(
    network: torch.nn.Module, image: torch.Tensor, spec: SegmentationSpec, sw_batch_size: int = 4
) -> torch.Tensor:
    """Logits ``(B, K+1, Z, Y, X)`` of a whole preprocessed volume (MONAI sliding window, Gaussian)."""
    from monai.inferers import sliding_window_inference

    logits = sliding_window_inference(
        image, roi_size=spec.roi_size, sw_batch_size=sw_batch_size, predictor=network,
        overlap=spec.overlap, mode="gaussian",
    )  # fmt: skip
    return logits if isinstance(logits, torch.Tensor) else torch.as_tensor(logits)


class SegmentationModule(SupervisedModule):
    """A MONAI 3D network trained with Dice + cross-entropy; validated per structure by Dice."""

    def __init__(
        self,
        spec: dict[str, Any],
        channels: Sequence[int] = (8, 16, 32, 64),
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        dropout: float = 0.0,
        sw_batch_size: int = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = SegmentationSpec.from_dict(spec)
        self.net = build_segmentation_network(
            self.spec.network, num_classes=self.spec.num_classes, channels=channels, dropout=dropout
        )
        from monai.losses import DiceCELoss
        from monai.metrics import DiceMetric

        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.val_dice = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        from monai.networks.utils import one_hot

        labels = batch[LABEL_KEY].long()
        logits = sliding_window_logits(self.net, batch[IMAGE_KEY], self.spec, self.hparams["sw_batch_size"])
        self.log("val_loss", self.loss(logits, labels), sync_dist=True, batch_size=len(logits))
        classes = self.spec.num_classes
        predicted = one_hot(logits.argmax(dim=1, keepdim=True), classes)
        self.val_dice(y_pred=predicted, y=one_hot(labels, classes))

    def on_validation_epoch_end(self) -> None:
        per_structure = self.val_dice.aggregate()
        self.val_dice.reset()
        if not isinstance(per_structure, torch.Tensor) or per_structure.numel() != len(self.spec.labels):
            return
        # Each rank measured its shard of the validation volumes; sync_dist averages the ranks.
        self.log("val_dice", per_structure.nanmean(), sync_dist=True)
        for index, name in enumerate(self.spec.structures):
            self.log(f"val_dice_{metric_name(name)}", per_structure[index], sync_dist=True)
