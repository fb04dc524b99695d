"""NVIDIA Triton: export an approved model as a model repository, run the server, call it.

``export_repository`` (``radgate triton export NAME@ALIAS --repo DIR``) refuses versions the
gate does not allow; ``TritonServer`` starts the ``tritonserver`` binary bundled in the
``nvidia-pytriton`` wheel (Python backend, CPU); ``TritonForward`` is the serving backend
(gRPC, checks the version and artifact hash Triton reports).
"""

from serving.triton.client import TritonForward, TritonModelMismatch
from serving.triton.export import ExportResult, TritonBackendKind, TritonExportError, export_repository
from serving.triton.server import TritonNotInstalled, TritonServer, find_tritonserver

__all__ = [
    "ExportResult",
    "TritonBackendKind",
    "TritonExportError",
    "TritonForward",
    "TritonModelMismatch",
    "TritonNotInstalled",
    "TritonServer",
    "export_repository",
    "find_tritonserver",
]
