"""Ray Train's workers get the CPU the one-process run gets: the job's Ray starts them at the
driver's niceness (Ray's default is 15), and every epoch reports the CPU time it cost, summed
over the ranks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.launch import FitJob, _init_ray
from training.module import ThroughputMeter
from training.preprocess import PreprocessingSpec

pytestmark = pytest.mark.integration


def _job(tmp_path: Path) -> FitJob:
    return FitJob(
        train_rows=[], val_rows=[], spec=PreprocessingSpec(spatial_size=(16, 16)), network="resnet18",
        num_classes=2, lr=1e-3, weight_decay=0.0, dropout=0.0, max_epochs=1, batch_size=2,
        cache_rate=1.0, seed=0, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", run_id="-",
        checkpoint_dir=tmp_path / "checkpoints", workers=2, cpus_per_worker=1,
    )  # fmt: skip


def test_ray_workers_run_at_the_drivers_niceness(tmp_path: Path) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _init_ray(_job(tmp_path))
    try:

        @ray.remote(num_cpus=1)
        class Worker:
            def niceness(self) -> int:
                return os.nice(0)

        assert ray.get(Worker.remote().niceness.remote(), timeout=120) == os.nice(0)  # type: ignore[attr-defined]
    finally:
        ray.shutdown()


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(8, 2)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_throughput_meter_reports_each_epochs_cpu_time() -> None:
    data = TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,)))
    meter = ThroughputMeter(64)
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[meter], logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    trainer.fit(_Tiny(), DataLoader(data, batch_size=8))
    assert len(meter.epoch_cpu_seconds) == len(meter.epoch_seconds) == 2
    assert all(cpu > 0 for cpu in meter.epoch_cpu_seconds)
    assert float(trainer.callback_metrics["epoch_cpu_seconds"]) == pytest.approx(meter.epoch_cpu_seconds[-1])
