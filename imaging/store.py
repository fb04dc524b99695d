"""Content-addressed object store: objects named by the sha256 of their bytes, written atomically.

Local filesystem by default; any fsspec URL (``s3://bucket/prefix``) for scale-out.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from governance.settings import Settings, get_settings

__all__ = ["ContentStore", "StoreError", "atomic_write", "publish_once"]


class StoreError(RuntimeError):
    """An object is missing or does not match its address."""


def atomic_write(
    path: Path, data: bytes | Sequence[bytes | memoryview], *, durable: bool = True, replace: bool = True
) -> None:
    """Write via a temporary file in the same folder, then rename: never a partial file.

    ``data`` is the content, or its pieces in order. ``durable`` fsyncs the file first; batch
    writers pass False and call ``os.sync()`` once before they commit the batch's catalog
    records. ``replace=False`` keeps a file already at ``path`` (hard link, not rename):
    content-addressed writers racing on one name then all share the first file, which another
    writer's flushes and locks already hold.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:  # pieces, written in order (no joined copy)
                handle.writelines(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            publish_once(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def publish_once(tmp: str, path: Path) -> None:
    """Put the finished file ``tmp`` at ``path`` (same filesystem) unless a file is there
    already (content-addressed: same name, same content; the first writer's file stays), by a
    hard link, or a rename where the filesystem has no hard links. ``tmp`` is gone afterwards."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # same name, same content: the first writer's file stays
    except OSError:  # a filesystem without hard links
        if not path.exists():
            os.replace(tmp, path)
            return
    os.unlink(tmp)


class ContentStore:
    """``put`` returns the sha256 key; ``get`` verifies it."""

    def __init__(self, root: str, cache_dir: Path | None = None) -> None:
        self.root = root
        # Remote stores: where path() keeps verified local copies (readers such as MONAI need files).
        self.cache_dir = cache_dir
        self._local = "://" not in root or root.startswith("file://")
        if self._local:
            self._path = Path(root.removeprefix("file://"))
        else:
            import fsspec

            self._fs, self._base = fsspec.core.url_to_fs(root)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ContentStore:
        settings = settings or get_settings()
        return cls(settings.resolved_object_store, cache_dir=settings.home / "cache" / "objects")

    @staticmethod
    def _rel(key: str) -> str:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise StoreError("object keys are sha256 hex digests")
        return f"{key[:2]}/{key[2:4]}/{key}.dcm"

    def path(self, key: str) -> Path:
        """Local path of an object. A remote store fetches the object into ``cache_dir`` first
        (verified against its key); an object absent from the store gives a path that does not
        exist, as for a local store."""
        if self._local:
            return self._path / self._rel(key)
        if self.cache_dir is None:
            raise StoreError("path() on a remote store needs a cache_dir")
        local = self.cache_dir / self._rel(key)
        if not local.exists() and self.exists(key):
            atomic_write(local, self.get(key), durable=False)
        return local

    def exists(self, key: str) -> bool:
        if self._local:
            return self.path(key).exists()
        return bool(self._fs.exists(f"{self._base}/{self._rel(key)}"))

    def delete(self, key: str) -> bool:
        """Remove an object and the verified local copy ``path()`` may have made of it (patient
        erasure); whether the store held the object. An absent object is no error, so that a
        re-run after a partial erasure goes through. The local copy goes first: a crash between
        the two leaves the object, which the next run finds and removes with its copy."""
        rel = self._rel(key)
        if self.cache_dir is not None:
            (self.cache_dir / rel).unlink(missing_ok=True)
        if self._local:
            path = self._path / rel
            held = path.exists()
            path.unlink(missing_ok=True)
            return held
        remote = f"{self._base}/{rel}"
        if not self._fs.exists(remote):
            return False
        self._fs.rm(remote)
        return True

    def put(self, data: bytes, *, durable: bool = True, digest: str | None = None) -> str:
        """Store ``data``; ``digest`` is its sha256 when the caller has it already (not recomputed)."""
        key = digest or hashlib.sha256(data).hexdigest()
        if self.exists(key):
            return key
        if self._local:
            atomic_write(self.path(key), data, durable=durable, replace=False)
        else:
            self._fs.pipe_file(f"{self._base}/{self._rel(key)}", data)
        return key

    def get(self, key: str) -> bytes:
        try:
            if self._local:
                data = self.path(key).read_bytes()
            else:
                data = self._fs.cat_file(f"{self._base}/{self._rel(key)}")
        except FileNotFoundError as exc:
            raise StoreError(f"object {key} is not in the store") from exc
        if hashlib.sha256(data).hexdigest() != key:
            raise StoreError(f"object {key} does not match its hash")
        return bytes(data)
