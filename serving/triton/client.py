"""Forward passes on Triton over gRPC, only for the version and artifact the gate approved."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from governance.tls import ClientTls

__all__ = [
    "EMBEDDING_NAME",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "TritonForward",
    "TritonModelMismatch",
    "grpc_client",
]

INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"
#: The penultimate-layer embedding (live monitoring), when the export has it (Python/pytorch).
EMBEDDING_NAME = "OUTPUT__1"
SHA_PARAMETER = "radgate_artifact_sha256"


def grpc_client(url: str, tls: ClientTls | None = None) -> Any:
    """tritonclient's gRPC client for ``url``: over TLS verified against ``tls.ca_file`` (and
    mutual when ``tls`` has a certificate) when ``tls`` is given, else plaintext (a Triton on
    the same host or pod only). ``tls.server_name`` overrides the name checked in Triton's
    certificate (default: the host of ``url``)."""
    import tritonclient.grpc as grpcclient

    if tls is None:
        return grpcclient.InferenceServerClient(url)
    options: list[tuple[str, Any]] = []
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpcclient.InferenceServerClient(
        url,
        ssl=True,
        root_certificates=str(tls.ca_file),
        private_key=str(tls.private_key) if tls.private_key else None,
        certificate_chain=str(tls.certificate) if tls.certificate else None,
        channel_args=options or None,
    )


class TritonModelMismatch(RuntimeError):
    """Triton does not serve the approved version (or serves another artifact)."""


class TritonForward:
    """Logits from Triton for ``model_name`` at ``version`` (a RadGate registry version), and
    the monitoring embedding from the same forward pass when the exported model returns it
    (:meth:`with_embedding`; the exporter adds it for the Python and pytorch backends)."""

    name = "triton"

    def __init__(
        self,
        url: str,
        model_name: str,
        version: str,
        artifact_sha256: str,
        *,
        loader: Any = None,
        tls: ClientTls | None = None,
    ) -> None:
        """With ``loader`` (a :class:`serving.triton.publish.TritonLoader`), the model is loaded
        from verified bytes first and the repository re-verified before forward passes."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        self._grpc = grpcclient
        self.loader = loader
        if loader is not None:
            loader.load(model_name, str(version))
        self.client = grpc_client(url, tls)
        self.model_name, self.version = model_name, str(version)
        try:
            ready = self.client.is_model_ready(model_name, self.version)
            config: dict[str, Any] = self.client.get_model_config(model_name, self.version, as_json=True)
        except InferenceServerException as exc:
            raise TritonModelMismatch(f"Triton at {url}: {model_name} v{version}: {exc.message()}") from exc
        if not ready:
            raise TritonModelMismatch(f"Triton at {url} does not serve {model_name} v{version}")
        parameters = config.get("config", config).get("parameters", {})
        reported = parameters.get(SHA_PARAMETER, {}).get("string_value")
        if reported != artifact_sha256:
            raise TritonModelMismatch(
                f"Triton's {model_name} v{version} was exported from another artifact than the approved one"
            )
        outputs = config.get("config", config).get("output", [])
        self.has_embedding = any(o.get("name") == EMBEDDING_NAME for o in outputs)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._infer(batch, embedding=False)[0]

    def with_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and the penultimate embedding of one forward pass (``None`` when the exported
        model has no embedding output)."""
        return self._infer(batch, embedding=self.has_embedding)

    def _infer(self, batch: np.ndarray, *, embedding: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self.loader is not None:  # a swapped repository unloads the model and refuses
            self.loader.verify(self.model_name, self.version)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        tensor = self._grpc.InferInput(INPUT_NAME, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        names = [OUTPUT_NAME, EMBEDDING_NAME] if embedding else [OUTPUT_NAME]
        result = self.client.infer(
            self.model_name,
            [tensor],
            model_version=self.version,
            outputs=[self._grpc.InferRequestedOutput(n) for n in names],
        )
        logits: np.ndarray = result.as_numpy(OUTPUT_NAME)
        return logits, result.as_numpy(EMBEDDING_NAME) if embedding else None
