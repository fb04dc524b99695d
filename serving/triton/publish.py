"""Publishing approved models to Triton and loading them only from verified bytes.

The model repository is written only here (:func:`publish`), by the gate's publisher: the
export of an approved version, its files' SHA-256 recorded in a signed audit entry
(``model.publish``, bound to the registry's approved artifact hash), and the files made
read-only. Triton runs with ``--model-control-mode=explicit`` and loads nothing by itself:
:class:`TritonLoader` asks the gate, reads the published files, checks each against the
publication record and hands Triton those exact bytes in the load request (Triton's load API
with file overrides), so what Triton runs is what was checked, never what the repository
holds at Triton's read. A mismatch (weights swapped after approval) refuses the load and
unloads the model. The Python backend's ``model.py`` also checks the weights' hash against
the config before loading (a reload that bypasses RadGate with only the weights swapped fails).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from governance.approvals.digests import file_identity, settled
from serving.triton.client import TritonModelMismatch, grpc_client
from serving.triton.export import ExportResult, export_repository

if TYPE_CHECKING:
    from governance.approvals import Gate
    from governance.audit import AuditLog
    from governance.tls import ClientTls

__all__ = ["PUBLISH_ACTION", "WEIGHTS_PARAMETER", "Publication", "TritonLoader", "publish", "published_files"]

PUBLISH_ACTION = "model.publish"
WEIGHTS_PARAMETER = "radgate_weights_sha256"
_MODEL_FILES = ("model.pt", "model.py", "model.onnx")


@dataclass(frozen=True)
class Publication:
    export: ExportResult
    files: dict[str, str]  # path relative to the model directory -> sha256
    audit_seq: int


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_only(path: Path) -> None:
    for item in sorted(path.rglob("*"), reverse=True):
        item.chmod(0o555 if item.is_dir() else 0o444)
    path.chmod(0o555)


def publish(
    ref: str, repo: Path, *, actor: str, role: str, gate: Gate | None = None, **export_options: Any
) -> Publication:
    """Export ``ref`` (refused unless the gate allows it) into ``repo`` and record its files."""
    from governance.approvals.registry import model_target
    from governance.audit import AuditLog

    model_dir = Path(repo) / ref.split("@")[0].split("/")[0]
    if model_dir.exists():  # a re-publication replaces the previous (read-only) files
        for item in [model_dir, *model_dir.rglob("*")]:
            if item.is_dir():
                item.chmod(0o755)
    export = export_repository(ref, repo, gate=gate, **export_options)
    version_dir = export.model_dir / export.version
    weights = next((version_dir / n for n in ("model.pt", "model.onnx") if (version_dir / n).exists()), None)
    if weights is None:
        raise TritonModelMismatch(f"the export of {export.name} v{export.version} has no weights")
    config = export.model_dir / "config.pbtxt"
    config.chmod(0o644)
    weights_sha = _sha256(weights.read_bytes())
    with config.open("a") as handle:  # the backend checks the weights it loads against this
        value = f'{{ string_value: "{weights_sha}" }}'
        handle.write(f'parameters {{ key: "{WEIGHTS_PARAMETER}" value: {value} }}\n')
    files = {"config.pbtxt": _sha256(config.read_bytes())}
    for name in _MODEL_FILES:
        path = version_dir / name
        if path.exists():
            files[f"{export.version}/{name}"] = _sha256(path.read_bytes())
    entry = AuditLog().append(
        actor,
        PUBLISH_ACTION,
        model_target(export.name, export.version),
        {"artifact_sha256": export.artifact_sha256, "files": files, "backend": export.backend.value},
        role=role,
    )
    _read_only(export.model_dir)
    return Publication(export, files, entry.seq)


def published_files(audit: AuditLog, name: str, version: str, artifact_sha256: str) -> dict[str, str]:
    """The files of the newest authentic publication of ``name`` v``version`` from the approved
    artifact; raises :class:`TritonModelMismatch` when there is none."""
    from governance.approvals.registry import model_target

    for entry in audit.entries(
        target=model_target(name, version), actions=[PUBLISH_ACTION], newest_first=True
    ):
        if not audit.authentic(entry):
            raise TritonModelMismatch(f"publication entry {entry.seq} is not signed by the audit writer")
        if entry.details.get("artifact_sha256") == artifact_sha256:
            files = entry.details.get("files")
            if isinstance(files, dict) and files:
                return {str(k): str(v) for k, v in files.items()}
    raise TritonModelMismatch(f"{name} v{version} was never published from its approved artifact")


def _config_json(pbtxt: bytes) -> str:
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    message = text_format.Parse(pbtxt.decode(), model_config_pb2.ModelConfig())
    return json_format.MessageToJson(message, preserving_proto_field_name=True)


class TritonLoader:
    """Loads published models into a Triton in explicit model-control mode, from verified bytes."""

    def __init__(
        self,
        url: str,
        repo: Path,
        *,
        gate: Gate | None = None,
        audit: AuditLog | None = None,
        verify_ttl_s: float = 2.0,
        rehash_s: float = 60.0,
        tls: ClientTls | None = None,
    ) -> None:
        """``tls``: gRPC over TLS to Triton (``serving.triton.client.grpc_client``).
        ``verify_ttl_s``: how long a passed re-check stands before the next forward pass
        checks again; ``rehash_s``: how long an unchanged file goes before its bytes are hashed
        again (between, its identity is compared; a load always hashes the bytes)."""
        self.client = grpc_client(url, tls)
        self.repo = Path(repo)
        self._gate, self._audit = gate, audit
        self.verify_ttl_s = verify_ttl_s
        self.rehash_s = rehash_s
        self._checked: dict[tuple[str, str], float] = {}
        # Published files this loader hashed and found as published, by path: their identity
        # then (device, inode, size, mtime_ns, ctime_ns), their digest and when to read them
        # again regardless. Writing to a file or replacing it changes that identity, so a
        # re-check between full reads stats the files instead of hashing tens of MB.
        self._hashed: dict[Path, tuple[tuple[int, ...], str, float]] = {}
        self._lock = threading.Lock()

    @property
    def gate(self) -> Gate:
        if self._gate is None:
            from governance.approvals import Gate

            self._gate = Gate()
        return self._gate

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            self._audit = self.gate.audit
        return self._audit

    def _verified_bytes(self, name: str, version: str, *, fresh: bool = True) -> tuple[str, dict[str, bytes]]:
        """The published files of ``name`` v``version`` checked against the newest authentic
        publication of the artifact the gate allows now. ``fresh`` (a load): a fresh gate
        decision and every file's bytes read and hashed, returned for Triton. Otherwise (the
        periodic re-check while serving): the gate's ordinary decision, as every request gets,
        and a file whose identity is unchanged since this loader hashed it (settled, within
        ``rehash_s``) is not read again; nothing is returned for such a file."""
        decision = self.gate(name, version=version, fresh=fresh)
        if not decision.allowed or decision.artifact_sha256 is None:
            raise TritonModelMismatch(f"{name} v{version} is not allowed by the gate")
        expected = published_files(self.audit, name, version, decision.artifact_sha256)
        model_dir = self.repo / name
        found: dict[str, bytes] = {}
        for rel, digest in expected.items():
            path = model_dir / rel
            try:
                if not fresh and self._unchanged(path, digest):
                    continue
                before = file_identity(path)
                data = path.read_bytes()
                after = file_identity(path)
            except OSError as exc:
                raise TritonModelMismatch(f"published file {rel} of {name} v{version} is unreadable") from exc
            if _sha256(data) != digest:
                with self._lock:
                    self._hashed.pop(path, None)
                raise TritonModelMismatch(f"{name} v{version}: {rel} differs from what was published")
            self._remember(path, digest, before, after)
            found[rel] = data
        # Bytecode caches are not loaded from here (Triton gets the verified files); anything
        # else unpublished beside the weights is refused.
        extra = {
            p.relative_to(model_dir).as_posix()
            for p in (model_dir / version).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        } - set(expected)
        if extra:
            raise TritonModelMismatch(
                f"{name} v{version}: unpublished files in the repository: {sorted(extra)}"
            )
        return decision.artifact_sha256, found

    def _unchanged(self, path: Path, digest: str) -> bool:
        """Whether ``path`` is the file this loader last hashed as ``digest``, not touched since
        (same identity) and hashed within ``rehash_s``."""
        with self._lock:
            known = self._hashed.get(path)
        if known is None or known[1] != digest or known[2] <= time.monotonic():
            return False
        return file_identity(path) == known[0]

    def _remember(self, path: Path, digest: str, before: tuple[int, ...], after: tuple[int, ...]) -> None:
        """Keep the identity of a file just hashed as published, when it did not change while it
        was read and its times are :data:`SETTLE_S` in the past (a write in the same clock tick
        as the read could otherwise leave the same times behind)."""
        with self._lock:
            if before == after and settled(after, time.time_ns()):
                self._hashed[path] = (after, digest, time.monotonic() + self.rehash_s)
            else:
                self._hashed.pop(path, None)

    def load(self, name: str, version: str) -> None:
        """Verify, then load exactly the verified bytes; on any mismatch unload and raise."""
        try:
            _, files = self._verified_bytes(name, str(version))
        except TritonModelMismatch:
            self.unload(name)
            raise
        config = _config_json(files.pop("config.pbtxt"))
        overrides = {f"file:{rel}": data for rel, data in files.items()}
        from tritonclient.utils import InferenceServerException

        try:
            self.client.load_model(name, config=config, files=overrides)
        except InferenceServerException as exc:
            raise TritonModelMismatch(f"Triton refused to load {name} v{version}: {exc.message()}") from exc
        with self._lock:
            self._checked[(name, str(version))] = time.monotonic() + self.verify_ttl_s

    def verify(self, name: str, version: str) -> None:
        """Re-check the repository against the publication (cached ``verify_ttl_s``; the gate's
        ordinary decision, files compared by identity between full reads); on a mismatch unload
        the model and raise, so a swapped repository never serves."""
        key = (name, str(version))
        with self._lock:
            if self._checked.get(key, 0.0) > time.monotonic():
                return
        try:
            self._verified_bytes(name, str(version), fresh=False)
        except TritonModelMismatch:
            self.unload(name)
            raise
        with self._lock:
            self._checked[key] = time.monotonic() + self.verify_ttl_s

    def unload(self, name: str) -> None:
        from tritonclient.utils import InferenceServerException

        model_dir = self.repo / name
        with self._lock:
            for key in [k for k in self._checked if k[0] == name]:
                del self._checked[key]
            for path in [p for p in self._hashed if p.is_relative_to(model_dir)]:
                del self._hashed[path]
        with contextlib.suppress(InferenceServerException):  # not loaded: nothing to unload
            self.client.unload_model(name)
