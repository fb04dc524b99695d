"""The LightningModule, the data module (MONAI CacheDataset) and the callbacks used in every run.

Used both in one plain Lightning process and inside each Ray Train worker; nothing here
touches the catalog (workers get materialised rows: local paths and labels).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from training.networks import build_network
from training.preprocess import IMAGE_KEY, LABEL_KEY, PreprocessingSpec

__all__ = [
    "CachedRowsDataModule",
    "ClassifierModule",
    "ImageDataModule",
    "MlflowEpochLogger",
    "SupervisedModule",
    "ThroughputMeter",
]


class SupervisedModule(pl.LightningModule):
    """``self.net`` trained on ``batch["image"]`` against ``batch["label"]`` with ``self.loss``,
    AdamW with cosine decay to zero over the run (hparams ``lr``, ``weight_decay``)."""

    net: torch.nn.Module
    loss: torch.nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return,unused-ignore]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch[IMAGE_KEY])
        loss = self.loss(logits, batch[LABEL_KEY].long())
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(logits))
        return loss  # type: ignore[no-any-return,unused-ignore]

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
        # Cosine decay to zero over the run: the last epochs settle instead of oscillating,
        # which matters because the final weights (not a "best" epoch) are evaluated and registered.
        epochs = max(int(self.trainer.max_epochs or 1), 1) if self._trainer is not None else 1
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class ClassifierModule(SupervisedModule):
    """Cross-entropy classifier around a MONAI network; logs loss and AUROC per epoch."""

    def __init__(
        self,
        network: str,
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_network(network, num_classes=num_classes, dropout=dropout)
        self.loss = torch.nn.CrossEntropyLoss()
        from torchmetrics.classification import AUROC

        self.val_auroc = AUROC(task="binary" if num_classes == 2 else "multiclass", num_classes=num_classes)

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, dim=1)
        return probs[:, 1] if self.hparams["num_classes"] == 2 else probs

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch[IMAGE_KEY])
        labels = batch[LABEL_KEY].long()
        self.log("val_loss", self.loss(logits, labels), sync_dist=True, batch_size=len(logits))
        self.val_auroc.update(self._scores(logits), labels)
        self.log("val_auroc", self.val_auroc, on_step=False, on_epoch=True)


class CachedRowsDataModule(pl.LightningDataModule):
    """Train/val loaders over materialised rows through MONAI ``CacheDataset``.

    Subclasses say what a row keeps (:meth:`row`) and which transforms apply
    (:meth:`transforms`); the deterministic prefix of each is cached once.
    """

    #: Validation batch size; None = ``batch_size``.
    val_batch_size: int | None = None
    #: Drop the last incomplete training batch when there is more than one batch.
    drop_last = True
    collate_fn: Any = None

    def __init__(
        self,
        train_rows: Sequence[dict[str, Any]],
        val_rows: Sequence[dict[str, Any]],
        *,
        batch_size: int,
        cache_rate: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_rows = [self.row(r) for r in train_rows]
        self.val_rows = [self.row(r) for r in val_rows]
        self.batch_size = batch_size
        self.cache_rate = cache_rate
        self.seed = seed
        self._train: Any = None
        self._val: Any = None

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def transforms(self) -> tuple[Any, Any]:
        """(train transform, eval transform)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        from monai.data import CacheDataset

        if self._train is None:
            # num_workers=0: with CacheDataset, process workers copy the cache to each worker
            # and made loading 3-5x slower (measured on 500 DICOM 256x256).
            train_transform, eval_transform = self.transforms()
            train_transform.set_random_state(seed=self.seed)
            self._train = CacheDataset(
                self.train_rows, train_transform, cache_rate=self.cache_rate, num_workers=0, progress=False
            )
            self._val = CacheDataset(
                self.val_rows, eval_transform, cache_rate=self.cache_rate, num_workers=0, progress=False
            )

    def _rank_share(self) -> int:
        """Training rows each process sees: under DDP (Ray Train) the sampler splits the set
        between ``world_size`` ranks, so "more than one batch" is decided on a rank's share."""
        trainer = getattr(self, "trainer", None)
        world = int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1
        return -(-len(self.train_rows) // max(world, 1))

    def train_dataloader(self) -> DataLoader[Any]:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self._train, batch_size=self.batch_size, shuffle=True, num_workers=0, generator=generator,
            drop_last=self.drop_last and self._rank_share() > self.batch_size, collate_fn=self.collate_fn,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(
            self._val, batch_size=self.val_batch_size or self.batch_size, shuffle=False, num_workers=0
        )


class ImageDataModule(CachedRowsDataModule):
    """Train/val loaders over materialised rows (``{"image": path, "label": int, ...}``)."""

    def __init__(
        self,
        train_rows: Sequence[dict[str, Any]],
        val_rows: Sequence[dict[str, Any]],
        spec: PreprocessingSpec,
        *,
        batch_size: int,
        cache_rate: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.spec = spec
        super().__init__(train_rows, val_rows, batch_size=batch_size, cache_rate=cache_rate, seed=seed)

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        return {IMAGE_KEY: row[IMAGE_KEY], LABEL_KEY: int(row[LABEL_KEY])}

    def transforms(self) -> tuple[Any, Any]:
        return self.spec.train_transform(), self.spec.eval_transform()


class ThroughputMeter(pl.Callback):
    """Wall time and images/s of each training epoch (all workers together), on every rank, and
    the CPU time the epoch cost: this process's, summed over the ranks (a load-independent
    measure of what distributing costs: gradient all-reduce, per-worker loading, idle spinning)."""

    def __init__(self, images_per_epoch: int) -> None:
        self.images_per_epoch = images_per_epoch
        self.epoch_seconds: list[float] = []
        self.epoch_cpu_seconds: list[float] = []
        self.train_start_unix = 0.0
        self._start = 0.0
        self._cpu = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_start_unix = time.time()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._cpu = time.process_time()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        mine = torch.tensor(time.process_time() - self._cpu, dtype=torch.float64, device=pl_module.device)
        cpu = float(trainer.strategy.reduce(mine, reduce_op="sum"))  # every rank takes part
        self.epoch_seconds.append(seconds)
        self.epoch_cpu_seconds.append(cpu)
        # Put into callback_metrics so Ray's report callback and the MLflow logger both carry them.
        trainer.callback_metrics["epoch_seconds"] = torch.tensor(seconds)
        trainer.callback_metrics["epoch_cpu_seconds"] = torch.tensor(cpu)
        trainer.callback_metrics["train_images_per_s"] = torch.tensor(
            self.images_per_epoch / max(seconds, 1e-9)
        )
        trainer.callback_metrics["train_start_unix"] = torch.tensor(
            self.train_start_unix, dtype=torch.float64
        )


class MlflowEpochLogger(pl.Callback):
    """Log ``trainer.callback_metrics`` to an existing MLflow run from global rank 0 only.

    Lightning's MLFlowLogger builds a client on every rank; this opens none on other ranks,
    and the store was created by the driver before any worker started (two processes
    migrating a fresh SQLite MLflow store at once crash in Alembic).
    """

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer)

    def _log(self, trainer: pl.Trainer) -> None:
        if trainer.global_rank != 0:
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        values = {
            k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1
        }
        metrics = [
            Metric(key=k, value=v, timestamp=now, step=trainer.current_epoch) for k, v in values.items()
        ]
        if metrics:
            MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=metrics)
