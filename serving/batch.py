"""Batch inference over a cohort: the approved model over every instance of a dataset version,
with Ray Data (batched map over the manifest on CPU or GPU actors).

The gate decides for every batch: each actor asks it (registry, policy, approvals, alias
provenance; no cached answer) before the batch's forward pass, reloads the model through
:func:`serving.model.load_gated` when the approved version changed, and predicts nothing when it
is denied (a revocation mid-run stops the rest of the run, batch by batch). Results are written
as the service builds them (:meth:`serving.model.ServedPredictor.result`): one JSON per instance
and its DICOM result objects, under ``OUTPUT/<model>/v<version>/`` (a folder or an fsspec URL);
a rerun skips instances whose result for the approved version is there. The driver writes the
audit entries the service writes (``serve.predict`` per batch, ``serve.predict.denied`` when
the gate refused, inputs named by hash only) and one ``serve.batch.run`` entry with the counts.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from serving.model import ServedPredictor

__all__ = ["BatchJob", "BatchPredictor", "BatchReport", "predict_dataset"]

BATCH_ACTOR = "radgate-batch"
_STATUSES = ("predicted", "existing", "denied", "failed")


@dataclass(frozen=True)
class BatchJob:
    """What each actor needs (picklable, no secrets)."""

    model: str
    alias: str | None
    version: str | None
    output: str
    store_root: str
    dataset_id: str
    dicom: bool = True
    threads: int = 1
    gpus: float = 0.0  # per actor; the module moves to CUDA when the actor holds a GPU


class _Output:
    """Where results go: a local folder (atomic writes) or an fsspec URL."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.local = "://" not in root or root.startswith("file://")
        if not self.local:
            import fsspec

            self._fs, self._base = fsspec.core.url_to_fs(root)

    def exists(self, relative: str) -> bool:
        if self.local:
            return (Path(self.root.removeprefix("file://")) / relative).exists()
        return bool(self._fs.exists(f"{self._base}/{relative}"))

    def write(self, relative: str, data: bytes) -> None:
        if self.local:
            from imaging.store import atomic_write

            atomic_write(Path(self.root.removeprefix("file://")) / relative, data, durable=False)
        else:
            self._fs.pipe_file(f"{self._base}/{relative}", data)


class BatchPredictor:
    """A Ray Data actor: ``__call__`` takes a batch of ``sha256``/``store_key`` columns and
    returns one row per instance (status, version, label, probability, objects, reason)."""

    def __init__(self, job: BatchJob) -> None:
        import torch

        from governance.approvals import Gate
        from imaging.store import ContentStore
        from serving.config import ServedModel

        torch.set_num_threads(job.threads)
        self.job = job
        self.gate = Gate(ttl_s=0.0)  # no cached decision: each batch is decided afresh
        reference = {"version": job.version} if job.version else {"alias": job.alias}
        self.served = ServedModel.model_validate({"name": job.model, **reference})
        self.store = ContentStore(job.store_root)
        self.output = _Output(job.output)
        self.predictor: ServedPredictor | None = None

    def _approved(self) -> tuple[ServedPredictor | None, str, list[str]]:
        """(predictor or None, the version the gate named, reasons when denied)."""
        from serving.model import ArtifactMismatch, GateDenied, InProcessForward, ServedPredictor, load_gated

        decision = self.gate(self.served.name, self.served.alias, version=self.served.version)
        if not decision.allowed:
            return None, decision.version or "", list(decision.reasons)
        if self.predictor is None or self.predictor.version != decision.version:
            try:
                loaded, fresh = load_gated(self.served, self.gate, version=decision.version)
            except (GateDenied, ArtifactMismatch) as exc:
                return None, decision.version or "", [str(exc)]
            if self.job.gpus > 0:
                import torch

                if torch.cuda.is_available():
                    loaded.module.to(torch.device("cuda"))  # InProcessForward follows the parameters
            self.predictor = ServedPredictor(loaded, fresh, InProcessForward(loaded))
        return self.predictor, str(decision.version), []

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        digests = [str(d) for d in batch["sha256"]]
        keys = [str(k) for k in batch["store_key"]]
        rows: list[dict[str, Any]] = [
            {"status": "", "label": "", "probability": np.nan, "objects": 0, "reason": ""} for _ in digests
        ]
        predictor, version, reasons = self._approved()
        if predictor is None:
            for row in rows:
                row.update(status="denied", reason="; ".join(reasons)[:500])
            return self._columns(digests, version, rows)
        folder = f"{self.job.model}/v{version}"
        todo: list[int] = []
        for index, digest in enumerate(digests):
            if self.output.exists(f"{folder}/{digest}.json"):
                rows[index]["status"] = "existing"
            else:
                todo.append(index)
        inputs: dict[int, tuple[bytes, np.ndarray]] = {}
        for index in todo:
            try:
                data = self.store.get(keys[index])  # verified against its hash
                inputs[index] = (data, predictor.preprocess(data).astype(np.float32, copy=False))
            except Exception as exc:  # the store or a decoder: this instance fails, not the batch
                rows[index].update(status="failed", reason=f"cannot read or decode ({type(exc).__name__})")
        if inputs:
            from serving.model import softmax

            order = list(inputs)
            logits = predictor.forward(np.stack([inputs[i][1] for i in order]))
            for index, probabilities in zip(order, softmax(logits), strict=True):
                rows[index].update(
                    self._write(predictor, folder, digests[index], inputs[index][0], probabilities)
                )
        return self._columns(digests, version, rows)

    def _write(
        self, predictor: ServedPredictor, folder: str, digest: str, data: bytes, probabilities: np.ndarray
    ) -> dict[str, Any]:
        """The service's result and DICOM objects for one instance, written (objects first, so a
        result JSON present means the whole result is there)."""
        try:
            result, objects = predictor.result(data, probabilities, explain=None, dicom=self.job.dicom)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return {"status": "failed", "reason": f"cannot build results ({type(exc).__name__})"}
        names = [f"{digest}.result-{i}.dcm" for i in range(len(objects))]
        for name, content in zip(names, objects, strict=True):
            self.output.write(f"{folder}/{name}", content)
        document = {
            "sha256": digest,
            "dataset": self.job.dataset_id,
            "model": {"name": predictor.loaded.name, "version": predictor.version},
            "approval": predictor.approval(),
            "result": result,
            "objects": names,
        }
        self.output.write(f"{folder}/{digest}.json", json.dumps(document, indent=1).encode())
        return {
            "status": "predicted",
            "label": result["decision"]["label"],
            "probability": float(result["probability"]),
            "objects": len(objects),
        }

    @staticmethod
    def _columns(digests: list[str], version: str, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {
            "sha256": np.array(digests, dtype=object),
            "version": np.array([version] * len(rows), dtype=object),
            "status": np.array([r["status"] for r in rows], dtype=object),
            "label": np.array([r["label"] for r in rows], dtype=object),
            "probability": np.array([r["probability"] for r in rows], dtype=np.float64),
            "objects": np.array([r["objects"] for r in rows], dtype=np.int64),
            "reason": np.array([r["reason"] for r in rows], dtype=object),
        }


@dataclass
class BatchReport:
    instances: int = 0
    batches: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    objects: int = 0
    elapsed_s: float = 0.0
    dataset: str = ""
    model: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "instances": self.instances,
            "batches": self.batches,
            **{status: self.statuses.get(status, 0) for status in _STATUSES},
            "versions": dict(self.versions),
            "labels": dict(self.labels),
            "objects": self.objects,
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.instances / self.elapsed_s, 1) if self.elapsed_s else None,
        }


def predict_dataset(
    model: str,
    dataset: str | None,
    *,
    output: str,
    alias: str | None = "production",
    version: str | None = None,
    split: str | None = None,
    studies: list[str] | None = None,
    batch_size: int = 16,
    concurrency: int = 1,
    gpus: float = 0.0,
    ray_address: str | None = None,
    dicom: bool = True,
    actor: str = BATCH_ACTOR,
    role: str = "",
) -> BatchReport:
    """Run the approved ``model`` over the dataset version ``dataset`` (id, prefix or name), or
    over every stored instance of ``studies`` (de-identified Study Instance UIDs); raises
    :class:`serving.model.GateDenied` when the gate refuses it before the run starts."""
    import ray

    from governance.approvals import Gate
    from governance.approvals.registry import model_target
    from governance.audit import record
    from governance.settings import get_settings
    from serving.model import GateDenied

    settings = get_settings()
    cohort, rows = cohort_rows(dataset, studies=studies, split=split)
    reference = {"version": version} if version else {"alias": alias}
    decision = Gate()(model, reference.get("alias"), version=reference.get("version"), fresh=True)
    if not decision.allowed:
        target = model_target(model, decision.version or "?")
        record(
            actor, "serve.predict.denied", target, {"reasons": decision.reasons[:5], "batch": True}, role=role
        )
        raise GateDenied(decision)
    job = BatchJob(
        model=model, alias=None if version else alias, version=version, output=output,
        store_root=settings.resolved_object_store, dataset_id=cohort,
        dicom=dicom, threads=1, gpus=gpus,
    )  # fmt: skip
    report = BatchReport(dataset=cohort, model=model)
    started = time.perf_counter()
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=ray_address, log_to_driver=False, include_dashboard=False)
    try:
        predicted = ray.data.from_items(rows).map_batches(
            BatchPredictor,
            fn_constructor_args=(job,),
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=concurrency,
            num_cpus=job.threads,
            num_gpus=job.gpus or None,
        )
        for out in predicted.iter_batches(batch_size=None, batch_format="numpy"):
            _account(report, out, actor, role, cohort)
    finally:
        if owned:
            ray.shutdown()
    report.elapsed_s = time.perf_counter() - started
    record(actor, "serve.batch.run", f"model:{model}", {**report.as_dict(), "split": split}, role=role)
    return report


MAX_STUDIES = 10_000  # per run: the study list is read whole


def cohort_rows(
    dataset: str | None, *, studies: list[str] | None = None, split: str | None = None
) -> tuple[str, list[dict[str, str]]]:
    """``(cohort id, rows of sha256 and store_key)`` for a dataset version or a study list;
    raises :class:`imaging.datasets.DatasetError` for a missing, empty or oversized cohort."""
    import hashlib

    from sqlalchemy import select

    from governance.catalog import Instance, open_catalog
    from imaging.datasets import DatasetError, get_dataset

    if (dataset is None) == (studies is None):
        raise DatasetError("give a dataset version or a study list, not both")
    if dataset is not None:
        chosen = get_dataset(dataset)
        items = chosen.manifest.items if split is None else chosen.manifest.items_in(split)
        return chosen.id, [{"sha256": item.sha256, "store_key": item.store_key} for item in items]
    wanted = sorted({uid.strip() for uid in studies or [] if uid.strip()})
    if not wanted or len(wanted) > MAX_STUDIES:
        raise DatasetError(f"the study list must name 1 to {MAX_STUDIES} studies")
    rows: list[dict[str, str]] = []
    with open_catalog().session() as session:
        for start in range(0, len(wanted), 500):
            query = select(Instance.sha256, Instance.store_key).where(
                Instance.study_instance_uid.in_(wanted[start : start + 500])
            )
            rows += [
                {"sha256": sha, "store_key": key}
                for sha, key in session.execute(query.order_by(Instance.sha256))
            ]
    if not rows:
        raise DatasetError("no stored instance belongs to the listed studies")
    cohort = "studies:" + hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]
    return cohort, rows


def _account(report: BatchReport, out: dict[str, np.ndarray], actor: str, role: str, dataset: str) -> None:
    """Count a batch and audit it as the service audits a request (inputs by hash only)."""
    from governance.approvals.registry import model_target
    from governance.audit import record

    report.batches += 1
    report.instances += len(out["sha256"])
    report.statuses.update(str(s) for s in out["status"])
    report.objects += int(out["objects"].sum())
    for version in sorted({str(v) for v in out["version"]}):
        mine = [i for i, v in enumerate(out["version"]) if str(v) == version]
        report.versions[version] += len(mine)
        digests = [str(out["sha256"][i]) for i in mine]
        statuses = Counter(str(out["status"][i]) for i in mine)
        target = model_target(report.model, version or "?")
        if statuses.get("denied"):
            reasons = sorted({str(out["reason"][i]) for i in mine if out["status"][i] == "denied"})
            details = {"inputs_sha256": digests[:16], "n": len(mine), "batch": True, "reasons": reasons[:5]}
            record(actor, "serve.predict.denied", target, details, role=role)
            continue
        for i in mine:
            if out["status"][i] == "predicted":
                report.labels[str(out["label"][i])] += 1
        details = {
            "inputs_sha256": digests[:16],
            "n": len(mine),
            "batch": True,
            "dataset": dataset[:16],
            **{status: count for status, count in statuses.items()},
        }
        record(actor, "serve.predict", target, details, role=role)
