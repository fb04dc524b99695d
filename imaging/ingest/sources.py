"""The inputs of a distributed intake job: a folder, a file, an fsspec prefix (``s3://...``) or a
manifest (``*.manifest``/``*.txt``/``*.lst``: one absolute path or URL per line, ``#`` comments),
listed in a stable order and bounded; and the job id a rerun resumes under."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from imaging.ingest.runner import iter_files

__all__ = ["MANIFEST_SUFFIXES", "MAX_INPUTS", "SourceError", "is_url", "job_id_for", "list_source"]

MANIFEST_SUFFIXES = (".manifest", ".txt", ".lst")
MAX_INPUTS = 20_000_000  # entries one job lists (the driver holds the list: ~100 bytes each)
MAX_MANIFEST_LINE = 4096


class SourceError(ValueError):
    """The source cannot be listed (missing, empty, too many entries, a bad manifest line)."""


def is_url(name: str) -> bool:
    """A storage URL for fsspec (``s3://...``); ``file://`` and plain paths are local."""
    return "://" in name and not name.startswith("file://")


def list_source(source: str, *, max_inputs: int = MAX_INPUTS) -> list[str]:
    """The inputs of ``source`` in a stable order: local paths, or URLs for an fsspec prefix."""
    names = (
        sorted(_iter_source(source, max_inputs)) if is_url(source) else list(_iter_source(source, max_inputs))
    )
    if not names:
        raise SourceError("the source holds no input files")
    return names


def _iter_source(source: str, max_inputs: int) -> Iterator[str]:
    for count, name in enumerate(_entries(source), start=1):
        if count > max_inputs:
            raise SourceError(f"the source lists more than {max_inputs} inputs: split the job")
        yield name


def _entries(source: str) -> Iterator[str]:
    if is_url(source):
        import fsspec

        fs, base = fsspec.core.url_to_fs(source)
        for key in fs.find(base):
            yield str(fs.unstrip_protocol(key))
        return
    path = Path(source.removeprefix("file://"))
    if path.is_dir():
        yield from (str(p) for p in iter_files([path.resolve()]))
    elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        yield from _manifest_entries(path)
    elif path.is_file():
        yield str(path.resolve())
    else:
        raise SourceError("the source is neither a folder, a file, a manifest nor a storage URL")


def _manifest_entries(path: Path) -> Iterator[str]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) > MAX_MANIFEST_LINE:
                raise SourceError(f"manifest line {number} is longer than {MAX_MANIFEST_LINE} bytes")
            line = raw.decode("utf-8", "replace").strip()
            if not line or line.startswith("#"):
                continue
            if not is_url(line) and not Path(line.removeprefix("file://")).is_absolute():
                raise SourceError(f"manifest line {number}: entries are absolute paths or URLs")
            yield line if is_url(line) else str(Path(line.removeprefix("file://")))


def job_id_for(source: str, profile: str, key_id: str) -> str:
    """The job's id: the same source, profile and key always give the same job (a rerun resumes)."""
    canonical = source if is_url(source) else str(Path(source.removeprefix("file://")).resolve())
    return hashlib.sha256(f"radgate-ingest|{canonical}|{profile}|{key_id}".encode()).hexdigest()[:16]
