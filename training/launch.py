"""Fit a model: one plain Lightning process, or N Ray Train workers (TorchTrainer + RayDDPStrategy).

Both paths run the same :class:`~training.module.ClassifierModule` on the same rows and return
the trained weights with per-epoch timings; checkpoints stay bounded (the latest only) under
``checkpoint_dir`` and a run resumes from there.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training.preprocess import PreprocessingSpec
from training.segmentation.spec import SegmentationSpec

if TYPE_CHECKING:
    from training.segmentation.data import SegmentationFitOptions

__all__ = ["FitJob", "FitResult", "fit", "fit_local", "fit_ray"]

LOCAL_CHECKPOINT = "last.ckpt"
RAY_CHECKPOINT = "checkpoint.ckpt"


@dataclass
class FitJob:
    """Everything a worker needs; plain data, so it pickles to Ray workers."""

    train_rows: list[dict[str, Any]]
    val_rows: list[dict[str, Any]]
    #: A classifier's preprocessing, or a segmentation model's spec (then the rows are volumes).
    spec: PreprocessingSpec | SegmentationSpec
    network: str
    num_classes: int
    lr: float
    weight_decay: float
    dropout: float
    max_epochs: int
    batch_size: int
    cache_rate: float
    seed: int
    tracking_uri: str
    run_id: str
    checkpoint_dir: Path
    workers: int = 1
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0.0
    ray_address: str | None = None
    resume: bool = False
    segmentation: SegmentationFitOptions | None = None


@dataclass
class FitResult:
    state_dict: dict[str, torch.Tensor]
    epoch_seconds: list[float]
    images_per_epoch: int
    #: Seconds from the call to fit() to the start of the first training epoch (Ray start-up,
    #: worker creation, data caching, process-group set-up).
    startup_seconds: float
    wall_seconds: float
    checkpoint: Path | None
    workers: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: CPU seconds of each training epoch, all workers together (process CPU time, every thread).
    epoch_cpu_seconds: list[float] = field(default_factory=list)

    @property
    def steady_images_per_s(self) -> float:
        """Median images/s over epochs after the first (the first pays warm-up)."""
        steady = self.epoch_seconds[1:] or self.epoch_seconds
        if not steady:
            return 0.0
        return float(self.images_per_epoch / sorted(steady)[len(steady) // 2])


def _trainer_kwargs(job: FitJob) -> dict[str, Any]:
    return {
        "max_epochs": job.max_epochs,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": True if job.gpus_per_worker == 0 else "warn",
        "log_every_n_steps": 1,
    }


def _build(job: FitJob) -> tuple[Any, Any]:
    if isinstance(job.spec, SegmentationSpec):
        return _build_segmentation(job, job.spec)
    from training.module import ClassifierModule, ImageDataModule

    module = ClassifierModule(
        job.network, job.num_classes, lr=job.lr, weight_decay=job.weight_decay, dropout=job.dropout
    )
    data = ImageDataModule(
        job.train_rows,
        job.val_rows,
        job.spec,
        batch_size=job.batch_size,
        cache_rate=job.cache_rate,
        seed=job.seed,
    )
    return module, data


def _build_segmentation(job: FitJob, spec: SegmentationSpec) -> tuple[Any, Any]:
    from training.segmentation.data import SegmentationFitOptions, VolumeDataModule
    from training.segmentation.module import SegmentationModule

    options = job.segmentation or SegmentationFitOptions()
    module = SegmentationModule(
        spec.to_dict(), channels=options.channels, lr=job.lr, weight_decay=job.weight_decay,
        dropout=job.dropout, sw_batch_size=options.sw_batch_size,
    )  # fmt: skip
    data = VolumeDataModule(
        job.train_rows, job.val_rows, spec, batch_size=job.batch_size,
        samples_per_volume=options.samples_per_volume, pos_fraction=options.pos_fraction,
        augment=options.augment, cache_rate=job.cache_rate, seed=job.seed,
    )  # fmt: skip
    return module, data


def fit_local(job: FitJob) -> FitResult:
    """One process, plain Lightning (CPU threads = the machine's cores, or one GPU if asked)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from training.module import MlflowEpochLogger, ThroughputMeter

    started, started_unix = time.perf_counter(), time.time()
    torch.set_num_threads(max(job.cpus_per_worker, 1))
    pl.seed_everything(job.seed, workers=True, verbose=False)
    module, data = _build(job)
    meter = ThroughputMeter(len(job.train_rows))
    checkpoint = ModelCheckpoint(
        dirpath=job.checkpoint_dir, filename="last", save_top_k=1, monitor=None, enable_version_counter=False
    )
    trainer = pl.Trainer(
        accelerator="gpu" if job.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu",
        devices=1,
        callbacks=[meter, MlflowEpochLogger(job.tracking_uri, job.run_id), checkpoint],
        **_trainer_kwargs(job),
    )
    ckpt_path = job.checkpoint_dir / LOCAL_CHECKPOINT
    trainer.fit(
        module, datamodule=data, ckpt_path=str(ckpt_path) if job.resume and ckpt_path.exists() else None
    )
    return FitResult(
        state_dict={k: v.detach().cpu() for k, v in module.state_dict().items()},
        epoch_seconds=meter.epoch_seconds,
        images_per_epoch=len(job.train_rows),
        startup_seconds=(meter.train_start_unix or time.time()) - started_unix,
        wall_seconds=time.perf_counter() - started,
        checkpoint=ckpt_path if ckpt_path.exists() else None,
        workers=1,
        epoch_cpu_seconds=meter.epoch_cpu_seconds,
    )


def _ray_worker_loop(config: dict[str, Any]) -> None:
    """Runs in each Ray Train worker."""
    import pytorch_lightning as pl
    import ray.train
    from ray.train.lightning import (
        RayDDPStrategy,
        RayLightningEnvironment,
        RayTrainReportCallback,
        prepare_trainer,
    )

    from training.module import MlflowEpochLogger, ThroughputMeter

    job: FitJob = config["job"]
    # Threads must equal the CPUs of this worker: oversubscription made training 13x slower.
    torch.set_num_threads(max(job.cpus_per_worker, 1))
    pl.seed_everything(job.seed, workers=True, verbose=False)
    module, data = _build(job)
    use_gpu = job.gpus_per_worker > 0 and torch.cuda.is_available()
    trainer = pl.Trainer(
        accelerator="gpu" if use_gpu else "cpu",
        devices="auto",
        strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()],
        callbacks=[
            ThroughputMeter(len(job.train_rows)),
            MlflowEpochLogger(job.tracking_uri, job.run_id),
            RayTrainReportCallback(),
        ],
        enable_checkpointing=False,
        **_trainer_kwargs(job),
    )
    trainer = prepare_trainer(trainer)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.fit(module, datamodule=data, ckpt_path=os.path.join(directory, RAY_CHECKPOINT))
    else:
        trainer.fit(module, datamodule=data)


def _metric_history(job: FitJob, key: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(job.tracking_uri).get_metric_history(job.run_id, key)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def _latest_ray_checkpoint(root: Path) -> Path | None:
    candidates = sorted(root.glob(f"**/checkpoint_*/{RAY_CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
    return candidates[-1].parent if candidates else None


#: Environment of the job's Ray workers. Ray starts worker processes at niceness 15 so that its
#: own daemons stay responsive; for training workers, which are the job's work, that gave them
#: about a thirtieth of the CPU share of any ordinary process on the same cores (a one-process
#: Lightning run at niceness 0 took the cores from them on a shared machine). Ray's own job
#: supervisor starts job drivers at niceness 0 the same way.
RAY_WORKER_ENV = {"RAY_worker_niceness": "0"}


def _init_ray(job: FitJob) -> None:
    """Start (or join, with ``job.ray_address``) Ray for this job, its workers at niceness 0."""
    import ray

    runtime_env = {"env_vars": dict(RAY_WORKER_ENV)}
    if job.ray_address:
        ray.init(address=job.ray_address, log_to_driver=False, runtime_env=runtime_env)
    else:
        cpus = max(os.cpu_count() or 1, job.workers * job.cpus_per_worker)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)


def fit_ray(job: FitJob) -> FitResult:
    """N Ray Train workers with DDP (gloo on CPU, NCCL on GPU); the latest checkpoint only is kept."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started, started_unix = time.perf_counter(), time.time()
    owns_ray = not ray.is_initialized()
    if owns_ray:
        _init_ray(job)
    try:
        resources: dict[str, float] = {"CPU": float(job.cpus_per_worker)}
        if job.gpus_per_worker > 0:
            resources["GPU"] = job.gpus_per_worker
        job.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        resume_from = _latest_ray_checkpoint(job.checkpoint_dir) if job.resume else None
        trainer = TorchTrainer(
            _ray_worker_loop,
            train_loop_config={"job": job},
            scaling_config=ScalingConfig(
                num_workers=job.workers, use_gpu=job.gpus_per_worker > 0, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=f"run-{int(time.time())}",
                storage_path=str(job.checkpoint_dir),
                checkpoint_config=CheckpointConfig(num_to_keep=1),
            ),
            resume_from_checkpoint=Checkpoint.from_directory(str(resume_from)) if resume_from else None,
        )
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        if result.checkpoint is None:
            raise RuntimeError("Ray Train finished without a checkpoint")
        with result.checkpoint.as_directory() as directory:
            # weights_only: the checkpoint is read as tensors and plain containers, never unpickled
            # as arbitrary objects (a checkpoint written by a compromised worker cannot run code).
            state = torch.load(Path(directory) / RAY_CHECKPOINT, map_location="cpu", weights_only=True)
        # Rank 0 logged each epoch to MLflow (Ray keeps metrics only with retained checkpoints).
        epoch_seconds = _metric_history(job, "epoch_seconds")
        epoch_cpu_seconds = _metric_history(job, "epoch_cpu_seconds")
        starts = _metric_history(job, "train_start_unix")
        first_start = starts[-1] if starts else time.time()
        checkpoint_path = _latest_ray_checkpoint(job.checkpoint_dir)
    finally:
        if owns_ray:
            ray.shutdown()
    return FitResult(
        state_dict={k.removeprefix("_forward_module."): v for k, v in state["state_dict"].items()},
        epoch_seconds=epoch_seconds,
        images_per_epoch=len(job.train_rows),
        startup_seconds=first_start - started_unix,
        wall_seconds=time.perf_counter() - started,
        checkpoint=checkpoint_path,
        workers=job.workers,
        epoch_cpu_seconds=epoch_cpu_seconds,
    )


def fit(job: FitJob) -> FitResult:
    """Plain Lightning for one worker without a Ray address, Ray Train otherwise."""
    if job.workers == 1 and not job.ray_address:
        return fit_local(job)
    return fit_ray(job)
