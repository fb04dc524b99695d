"""The Ray Serve application: a FastAPI ingress and one deployment per served model.

``build_app(config)`` returns the bound application; ``run(config)`` starts Ray (local unless
``RAY_ADDRESS``; :func:`start_ray`), runs the app on ``config.host:config.port`` and returns.
With one ingress replica in a Ray started here, that replica answers HTTP on the port itself
(Ray Serve direct ingress): no HTTP proxy actor between the client and the ingress, which cost
7-15 ms per 140 KB request on the 2-core box against about 1 ms direct. A model that is one
replica on CPU runs in the ingress replica by default (``colocate``: no actor hop per request);
otherwise it is a deployment of its own with replicas, CPUs/GPUs and autoscaling from its
:class:`~serving.config.ServedModel`. Either way forward passes are batched with
``@serve.batch`` (size and wait from the config).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.api import IngressService, api, install_service
from serving.config import ServeConfig, ServedModel
from serving.net import free_port
from serving.worker import ModelWorker, Prepared

__all__ = ["APP_NAME", "BatchedModel", "Ingress", "ModelDeployment", "build_app", "run", "start_ray"]

APP_NAME = "radgate"
_GIL_SWITCH_INTERVAL_S = 0.0005  # in the serving processes (see BatchedModel and Ingress)


def _freeze_heap() -> None:
    """Move what start-up allocated (torch, MLflow, the model, the app) out of the garbage
    collector's reach: otherwise each full collection walks it all again, a pause of tens to
    hundreds of milliseconds in the middle of a request every few hundred requests."""
    import gc

    gc.collect()
    gc.freeze()


class BatchedModel:
    """One served model (a :class:`ModelWorker`) whose forward passes are batched across concurrent
    requests with ``@serve.batch``. It is the body of a model deployment, or runs in the ingress
    replica itself when the model is colocated (``ServedModel.colocated``: no actor hop)."""

    def __init__(self, served_json: str, gate_ttl_s: float) -> None:
        from governance.approvals import Gate

        served = ServedModel.model_validate_json(served_json)
        # Torch releases the GIL inside each op and takes it back between ops; with CPython's
        # default 5 ms switch interval a forward pass waits that long at op boundaries whenever
        # another thread of this process (HTTP handling, preprocessing, monitoring) holds the
        # GIL. Measured (DenseNet121, batch 1): forward 160 ms in the replica vs 108 ms bare;
        # with 0.5 ms, 107 vs 96.
        sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)
        # Live monitoring records in a child process: its Python work no longer holds this
        # process's GIL (py-spy: recorder 15 % of the GIL samples during the bench).
        gate = Gate(ttl_s=gate_ttl_s)
        gate.warm_up()  # bounded registry HTTP, client and catalog ready before the model loads
        self.worker = ModelWorker(served, gate, record_out_of_process=True)
        self._forward_batch.set_max_batch_size(served.max_batch_size)  # type: ignore[attr-defined]
        self._forward_batch.set_batch_wait_timeout_s(served.batch_wait_timeout_s)  # type: ignore[attr-defined]
        self._images_in_flight = 0
        self._in_flight_lock = threading.Lock()  # counted on the event loop and in prepare_one

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _forward_batch(
        self, items: list[np.ndarray]
    ) -> list[tuple[np.ndarray, int, np.ndarray | None]]:
        logits, embeddings = await asyncio.to_thread(self.worker.forward, np.stack(items))
        return [
            (row, len(items), None if embeddings is None else embeddings[k]) for k, row in enumerate(logits)
        ]

    def _alone(self) -> bool:
        return self._images_in_flight <= 1

    async def _forward(self, item: np.ndarray) -> tuple[np.ndarray, int, np.ndarray | None]:
        """Batch only when other images are in this replica: a lone image would wait
        ``batch_wait_timeout_s`` for company that is not coming."""
        if self._images_in_flight > 1:
            result: tuple[np.ndarray, int, np.ndarray | None] = await self._forward_batch(item)
            return result
        return await self.worker.forward_one(item)

    def _count(self, images: int) -> None:
        with self._in_flight_lock:
            self._images_in_flight += images

    def prepare_one(self, version: str, data: bytes) -> Prepared | None:
        """Called by the ingress in the worker thread that parsed a one-image request and found
        it allowed for ``version`` (this model runs in the ingress replica): decode it there and,
        when it is alone, forward it, so the request crosses to a worker thread once
        (:meth:`ModelWorker.prepare`). The image counts as in the replica meanwhile."""
        self._count(1)
        try:
            return self.worker.prepare(version, data, self._alone)
        finally:
            self._count(-1)

    async def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        images = len(payload.get("instances") or ())
        self._count(images)
        try:
            # A single image still alone once decoded is forwarded in the thread that decoded it
            # (ModelWorker.predict: a hop fewer); otherwise it may join a batch (_forward).
            return await self.worker.predict(payload, self._forward, alone=self._alone)
        finally:
            self._count(-images)

    async def info(self) -> dict[str, Any]:
        return self.worker.info()

    def close(self) -> None:
        """Shutting down: what live monitoring holds is recorded before the replica goes
        (bounded by Ray Serve's graceful shutdown timeout, 20 s by default)."""
        self.worker.close(timeout=8.0)


@serve.deployment(name="model", max_ongoing_requests=32, health_check_period_s=10)
class ModelDeployment(BatchedModel):
    """One served model in a deployment of its own (replicas, autoscaling, GPUs)."""

    def __init__(self, served_json: str, gate_ttl_s: float) -> None:
        super().__init__(served_json, gate_ttl_s)
        self._closed = False
        _freeze_heap()  # a colocated model's heap is frozen by the ingress that holds it

    def __del__(self) -> None:  # Ray Serve calls it at a graceful replica shutdown
        if not getattr(self, "_closed", True):
            self._closed = True
            self.close()


class _HandleClient:
    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.handle.info.remote()
        return result

    async def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.handle.predict.remote(payload)
        return result


@serve.deployment(name="ingress", max_ongoing_requests=64)
@serve.ingress(api)
class Ingress:
    """Authentication, input validation, the per-request gate, audit, metrics, PACS push."""

    def __init__(self, config_json: str, models: dict[str, DeploymentHandle]) -> None:
        # The ingress hands each request's parsing and gate to a worker thread and takes it back
        # on its event loop: with CPython's default 5 ms switch interval each such hand-over can
        # wait for the other thread's turn at the GIL. Measured without a model and without
        # Ray (the app under uvicorn, a model client that answers at once, 140 KB DICOM POSTs,
        # 2-core box at load 5): p50 5.5-11.6 ms at 5 ms, 3.8-5.8 ms at 0.5 ms; a bare ASGI app
        # taking the same POST 1.4-2.1 ms. A colocated model sets the same (BatchedModel).
        sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)
        config = ServeConfig.model_validate_json(config_json)
        clients: dict[str, Any] = {n: _HandleClient(h) for n, h in models.items()}
        self._colocated: list[BatchedModel] = []
        for served in config.models:  # colocated models run here, called without an actor hop
            if served.colocated:
                clients[served.name] = BatchedModel(served.model_dump_json(), config.gate_ttl_s)
                self._colocated.append(clients[served.name])
        service = IngressService(config, clients)
        # Warm the gate (artifact hashes, audit scan) so the first request does not pay for it.
        for served in config.models:
            service.gate(served.name, served.alias, version=served.version)
        install_service(service)
        # Periodic drift checks (serve config ``drift:``), in the first ingress replica only (one
        # alert per drift, not one per replica); their gauges are on that process's /metrics.
        from serving.monitoring.job import start_serving_drift

        self.drift = start_serving_drift(config) if serve.get_replica_context().rank.rank == 0 else None
        _freeze_heap()

    def __del__(self) -> None:  # Ray Serve calls it at a graceful replica shutdown
        colocated, self._colocated = getattr(self, "_colocated", []), []
        for model in colocated:
            model.close()


def build_app(config: ServeConfig) -> Any:
    models = {}
    for served in config.models:
        if served.colocated:
            continue
        options: dict[str, Any] = {
            "name": f"model-{served.name}",
            "ray_actor_options": {"num_cpus": served.num_cpus, "num_gpus": served.num_gpus},
            "max_ongoing_requests": served.max_ongoing_requests,
        }
        if served.autoscaling is not None:
            options["autoscaling_config"] = served.autoscaling.to_ray()
        else:
            options["num_replicas"] = served.num_replicas
        deployment = ModelDeployment.options(**options)  # type: ignore[attr-defined]
        models[served.name] = deployment.bind(served.model_dump_json(), config.gate_ttl_s)
    # The ingress replica also carries the CPUs of the models colocated in it.
    num_cpus = config.ingress_num_cpus + sum(m.num_cpus for m in config.models if m.colocated)
    ingress = Ingress.options(  # type: ignore[attr-defined]
        num_replicas=config.ingress_replicas, ray_actor_options={"num_cpus": num_cpus}
    )
    return ingress.bind(config.model_dump_json(), models)


def _direct_ingress_env(config: ServeConfig) -> dict[str, str]:
    """What Ray Serve's controller and replicas read at start-up for direct ingress on
    ``config.port`` (they inherit it from the process that starts Ray)."""
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(config.port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(config.port + 1),
        # Ray's default keeps a stopping replica listening 30 s for external load balancers; a
        # single node with no balancer in front only needs the requests in flight to finish.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        # A released port is otherwise quarantined for minutes (for HAProxy): a replica that
        # replaces a crashed one, or a redeploy, could not listen on the one port for that long.
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
    }


#: ``config.port`` of the local Ray that :func:`start_ray` started with direct ingress, if any.
_direct_ingress_port: int | None = None


def _direct_ingress_ready(config: ServeConfig) -> bool:
    import ray

    return config.wants_direct_ingress and ray.is_initialized() and _direct_ingress_port == config.port


#: What Ray Serve's replicas of a local Ray started here read at start-up (see :func:`start_ray`).
_REPLICA_ENV = {
    # Ray Serve runs a replica's code on an event loop in a thread of its own by default: each
    # request then crosses from the replica's loop (where the HTTP server of direct ingress and
    # the handle calls arrive) to that thread and its answer back, two thread wake-ups that cost
    # milliseconds on a loaded machine. The ingress's own work on its loop is short (the
    # token's read, a cached gate decision, one small header, the audit commit of a lone
    # entry); decoding, fresh gate decisions, series and forward passes run on worker threads,
    # so the replica's loop stays free for Ray's own calls.
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
}


def start_ray(config: ServeConfig, *, num_cpus: int | None = None, temp_dir: str | None = None) -> None:
    """``ray.init`` for serving ``config``: local unless ``RAY_ADDRESS``; a local Ray started
    here carries the direct-ingress settings for ``config.port`` (see the module docstring) and
    runs the replicas' code on their main event loop (:data:`_REPLICA_ENV`)."""
    import ray

    global _direct_ingress_port
    local = not os.environ.get("RAY_ADDRESS")
    if local:
        for name, value in _REPLICA_ENV.items():
            os.environ.setdefault(name, value)  # an operator's own setting wins
    direct = config.wants_direct_ingress and local
    if direct:
        os.environ.update(_direct_ingress_env(config))
    init: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True}
    if num_cpus is not None:
        init["num_cpus"] = num_cpus
    if temp_dir is not None:
        init["_temp_dir"] = temp_dir
    ray.init(**init)
    _direct_ingress_port = config.port if direct else None


def run(config: ServeConfig, *, num_cpus: int | None = None, temp_dir: str | None = None) -> None:
    """Start Ray (if needed) and Serve on ``config.host:config.port``; deploy; return when running.

    The ingress answers on the port directly when the running Ray was started by
    :func:`start_ray` for this config; otherwise (a Ray started elsewhere, several ingress
    replicas, ``direct_ingress: false``) Ray Serve's HTTP proxy listens there."""
    import ray

    if not ray.is_initialized():
        start_ray(config, num_cpus=num_cpus, temp_dir=temp_dir)
    direct = _direct_ingress_ready(config)
    # With direct ingress Ray Serve still starts its proxy on the head node: it gets another free
    # port on the same host (the same app behind it, so the same authentication), and
    # ``config.port`` is the ingress replica's own.
    proxy_port = free_port(config.host) if direct else config.port
    http_options: dict[str, Any] = {"host": config.host, "port": proxy_port}
    if config.tls is not None:
        http_options.update(
            ssl_certfile=str(config.tls.certificate),
            ssl_keyfile=str(config.tls.private_key),
            ssl_ca_certs=str(config.tls.ca_file) if config.tls.ca_file else None,
        )
    serve.start(proxy_location="HeadOnly", http_options=http_options)
    serve.run(build_app(config), name=APP_NAME, route_prefix=config.route_prefix, blocking=False)
