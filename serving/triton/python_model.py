"""Triton Python-backend model (copied as ``model.py`` into each exported version directory).

Runs the exported TorchScript on CPU. Triton's dynamic batcher may hand several requests at
once: they are concatenated into one forward pass. A model exported with the monitoring
embedding returns ``(logits, embedding)``: OUTPUT__1 is answered when a request asks for it.
``python_path`` (a model parameter) names the site-packages that hold torch, since the backend
stub runs outside any virtualenv.
"""

import hashlib
import io
import json
import os
import sys
from typing import Any


def _parameters(args: dict[str, str]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = _parameters(args)
        for path in reversed(params.get("python_path", "").split(os.pathsep)):
            if path and path not in sys.path:
                sys.path.insert(0, path)
        import torch

        torch.set_num_threads(int(params.get("torch_threads", "1") or 1))
        here = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        with open(here, "rb") as handle:
            weights = handle.read()
        # The publisher records the weights' hash in the config: weights swapped in the
        # repository after publication are refused here, before anything is deserialised.
        expected = params.get("radgate_weights_sha256", "")
        if not expected or hashlib.sha256(weights).hexdigest() != expected:
            raise ValueError("model.pt does not match the published weights hash: refusing to load")
        self.torch = torch
        self.model = torch.jit.load(io.BytesIO(weights), map_location="cpu").eval()

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils
        from torch.utils.dlpack import from_dlpack, to_dlpack

        # DLPack, not numpy: the backend stub is built against numpy 1 and our numpy may be 2.
        inputs = [from_dlpack(pb_utils.get_input_tensor_by_name(r, "INPUT__0").to_dlpack()) for r in requests]
        sizes = [len(t) for t in inputs]
        with self.torch.inference_mode():
            outputs = self.model(self.torch.cat(inputs).float())
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        names = [f"OUTPUT__{k}" for k in range(len(outputs))]
        parts = [self.torch.split(output.contiguous(), sizes) for output in outputs]
        responses = []
        for index, request in enumerate(requests):
            wanted = set(request.requested_output_names()) or {"OUTPUT__0"}
            tensors = [
                pb_utils.Tensor.from_dlpack(name, to_dlpack(part[index].contiguous().clone()))
                for name, part in zip(names, parts, strict=True)
                if name in wanted
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.model = None
