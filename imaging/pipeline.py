"""One input in, one outcome out: parse, validate, de-identify, encode. Never raises on bad input."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pydicom.config

from governance.keys import ProjectKey
from imaging.deid import Deidentifier, DeidProfile, DeidRecord, QuarantineError, QuarantineReason
from imaging.dicomio import Parts, encode_instance_parts, parse_instance

__all__ = ["Outcome", "Processed", "SealedOriginal", "process_bytes", "quiet_pydicom"]


class Outcome(StrEnum):
    DEIDENTIFIED = "deidentified"
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class SealedOriginal:
    """An original identifier, encrypted, with its HMAC lookup and its pseudonym."""

    kind: str
    lookup: str
    pseudonym: str
    sealed: bytes


@dataclass
class Processed:
    input_sha256: str
    input_size: int
    outcome: Outcome
    # the output in pieces (views of the input where bulk values are copied through); a writer
    # takes them one by one, ``output`` joins them once when asked
    output_parts: Parts | None = None
    output_sha256: str | None = None
    record: DeidRecord | None = None
    reason: QuarantineReason | None = None
    detail: str = ""
    sealed: list[SealedOriginal] = field(default_factory=list)
    transfer_syntax: str = ""
    _joined: bytes | None = field(default=None, init=False, repr=False)

    @property
    def output(self) -> bytes | None:
        """The encoded output (None when quarantined)."""
        if self._joined is None and self.output_parts is not None:
            self._joined = b"".join(self.output_parts)
        return self._joined

    @property
    def output_size(self) -> int:
        return sum(len(part) for part in self.output_parts or ())

    @property
    def summary(self) -> dict[str, Any]:
        """What lineage stores about the step (counts and reasons; no values)."""
        out: dict[str, Any] = {"outcome": self.outcome.value}
        if self.record is not None:
            out["actions"] = dict(self.record.actions)
            out["pixel_cleaned"] = self.record.pixel_cleaned
            if self.record.pixel_screen is not None:  # OCR engine, versions, boxes (never text)
                out["pixel_screen"] = self.record.pixel_screen
            out["transfer_syntax"] = self.transfer_syntax
            out["output_size"] = self.output_size
        if self.reason is not None:
            out["reason"] = self.reason.value
            out["detail"] = self.detail
        return out


def quiet_pydicom() -> None:
    """pydicom's warnings quote element values: they must never reach a log (PHI)."""
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
    warnings.filterwarnings("ignore", category=UserWarning, message=r".*(VR|value|Invalid|Expected).*")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE


#: Sealed originals by (broker key id, kind, lookup), newest last. The catalog keeps one row per
#: (kind, lookup) and ignores the rest, so every instance of a patient, study or series after the
#: first would otherwise pay an X25519 key agreement for a row that is thrown away. Holds only
#: ciphertext and keyed lookups (no original value); per process (a fork starts empty).
_SEALED_CACHE: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
_SEALED_CACHE_SIZE = 4096
_sealed_lock = threading.Lock()


def seal_originals(key: ProjectKey, deid: Deidentifier, record: DeidRecord) -> list[SealedOriginal]:
    out = []
    broker = key.seal_key_id
    for kind, original, pseudonym in record.originals:
        if not original:
            continue
        lookup = deid.pseudonyms.lookup(kind, original)
        cached = (broker, kind, lookup)
        with _sealed_lock:
            sealed = _SEALED_CACHE.get(cached)
            if sealed is not None:
                _SEALED_CACHE.move_to_end(cached)
        if sealed is None:
            sealed = key.seal(original.encode("utf-8", "surrogateescape"), associated=lookup.encode())
            with _sealed_lock:
                _SEALED_CACHE[cached] = sealed
                while len(_SEALED_CACHE) > _SEALED_CACHE_SIZE:
                    _SEALED_CACHE.popitem(last=False)
        out.append(SealedOriginal(kind, lookup, pseudonym, sealed))
    return out


#: Inputs at least this large are hashed on a helper thread while they are parsed and
#: de-identified (hashlib releases the GIL on large buffers), not before.
_HASH_BESIDE = 256 * 1024
_hash_pool: tuple[int, ThreadPoolExecutor] | None = None
_hash_pool_lock = threading.Lock()


def _hash_beside(data: bytes) -> Future[str]:
    """sha256 of ``data`` on this process's hashing thread (created per process: a pool
    inherited through fork has no thread)."""
    global _hash_pool
    with _hash_pool_lock:
        if _hash_pool is None or _hash_pool[0] != os.getpid():
            _hash_pool = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="radgate-sha256"))
        pool = _hash_pool[1]
    return pool.submit(lambda: hashlib.sha256(data).hexdigest())


def process_bytes(
    data: bytes,
    deid: Deidentifier,
    key: ProjectKey,
    profile: DeidProfile,
    *,
    digest: str | None = None,
    on_encoded: Callable[[Parts], object] | None = None,
) -> Processed:
    """De-identify one encoded instance, or say why it is quarantined. Does not raise.

    ``digest`` is the sha256 of ``data`` when the caller has it already (it is not recomputed);
    otherwise a large input is hashed on a helper thread while it is parsed and de-identified.
    ``on_encoded`` is called with the output's parts as soon as they are encoded, before they
    are hashed (a writer can start on them meanwhile); an outcome is then always de-identified.
    """
    pending = _hash_beside(data) if digest is None and len(data) >= _HASH_BESIDE else None
    if digest is None and pending is None:
        digest = hashlib.sha256(data).hexdigest()

    def input_digest() -> str:
        return pending.result() if pending is not None else str(digest)

    try:
        ds = parse_instance(data, max_bytes=profile.max_bytes)
        record = deid.deidentify(ds)
        parts = encode_instance_parts(ds)
    except QuarantineError as exc:
        return Processed(input_digest(), len(data), Outcome.QUARANTINED, reason=exc.reason, detail=exc.detail)
    except (Exception, RecursionError) as exc:
        return Processed(
            input_digest(),
            len(data),
            Outcome.QUARANTINED,
            reason=QuarantineReason.DEID_FAILED,
            detail=f"de-identification failed ({type(exc).__name__})",
        )
    if on_encoded is not None:
        on_encoded(parts)
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part)
    return Processed(
        input_digest(),
        len(data),
        Outcome.DEIDENTIFIED,
        output_parts=parts,
        output_sha256=hasher.hexdigest(),
        record=record,
        sealed=seal_originals(key, deid, record),
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")),
    )
