"""UPS workitems of AI tasks (DICOM PS3.4 Annex CC, IHE AI Workflow for Imaging): the store and
its state machine; the DICOMweb routes are :mod:`serving.interop.ups_routes`.

A workitem asks for one AI task (Scheduled Workitem Code Sequence; RadGate's scheme ``99RADGATE``
with the served model's name as code value, or a code mapped to a model in ``ups.tasks``) on input
instances (Input Information Sequence: study, series, SOP instances, and a WADO-RS Retrieve URL
under the configured DICOMweb source). States: SCHEDULED -> IN PROGRESS (claimed with a
Transaction UID that every later change must carry) -> COMPLETED or CANCELED; the final states are
final. Everything a client sends is checked against these rules before it is stored; what breaks
one is refused with :class:`WorkitemError` (HTTP 400/404/409) naming the rule, never the data.

Workitems are JSON files (the DICOM JSON model) under ``RADGATE_HOME/ups``, written atomically,
so the worklist survives a restart.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

__all__ = [
    "CANCELED",
    "COMPLETED",
    "IN_PROGRESS",
    "SCHEDULED",
    "UPS_PUSH_SOP_CLASS",
    "InputInstance",
    "UpsConfig",
    "WorkitemError",
    "WorkitemStore",
    "checked_uid",
    "parse_dataset",
    "parse_workitem",
    "workitem_inputs",
]

LOGGER = logging.getLogger(__name__)
SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED = "SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"
UPS_PUSH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"
RADGATE_SCHEME = "99RADGATE"
_UID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))*$")
_PRIORITIES = {"HIGH", "MEDIUM", "LOW"}


class UpsConfig(BaseModel):
    """``ups:`` of the serving config."""

    model_config = ConfigDict(extra="forbid")

    source_dicomweb_url: str = Field(
        description="DICOMweb base URL inputs are retrieved from, results stored to"
    )
    source_user: str | None = None
    source_password_env: str = "RADGATE_UPS_SOURCE_PASSWORD"  # the password is read from this variable
    tasks: dict[str, str] = Field(default_factory=dict, description="task code value -> served model")
    auto_claim: bool = True  # RadGate claims and runs each workitem as soon as it is created
    max_inputs: int = Field(default=16, ge=1, le=1024)
    max_workitems: int = Field(default=10_000, ge=1)
    store: Path | None = None  # default RADGATE_HOME/ups


class WorkitemError(ValueError):
    """A request breaks a UPS rule; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InputInstance:
    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    retrieve_url: str


def checked_uid(value: Any, what: str) -> str:
    text = str(value or "")
    if not text or len(text) > 64 or not _UID.match(text):
        raise WorkitemError(400, f"{what} must be a DICOM UID")
    return text


def _json_dataset(body: Any) -> Dataset:
    """One dataset from a DICOM JSON body (an array of one object, or the object itself)."""
    if isinstance(body, list):
        if len(body) != 1:
            raise WorkitemError(400, "the body must hold exactly one workitem")
        body = body[0]
    if not isinstance(body, dict):
        raise WorkitemError(400, "the body must be a DICOM JSON object")
    for tag, element in body.items():
        if not (isinstance(tag, str) and re.fullmatch(r"[0-9A-Fa-f]{8}", tag) and isinstance(element, dict)):
            raise WorkitemError(400, "the body is not in the DICOM JSON model (tags of 8 hex digits)")
        if "vr" not in element:
            raise WorkitemError(400, f"attribute {tag} has no vr")
    try:
        return Dataset.from_json(body)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise WorkitemError(400, f"the workitem is not valid DICOM JSON ({type(exc).__name__})") from exc


def parse_dataset(body: Any) -> Dataset:
    return _json_dataset(body)


def parse_workitem(
    body: Any, config: UpsConfig, served: set[str]
) -> tuple[Dataset, str, list[InputInstance]]:
    """Validate a new workitem: (dataset, served model it asks for, its input instances)."""
    item = _json_dataset(body)
    if "TransactionUID" in item:
        raise WorkitemError(400, "a new workitem must not carry a Transaction UID")
    state = str(item.get("ProcedureStepState", "") or "")
    if state != SCHEDULED:
        raise WorkitemError(400, "Procedure Step State must be SCHEDULED when a workitem is created")
    priority = str(item.get("ScheduledProcedureStepPriority", "") or "MEDIUM")
    if priority not in _PRIORITIES:
        raise WorkitemError(400, "Scheduled Procedure Step Priority must be HIGH, MEDIUM or LOW")
    codes = item.get("ScheduledWorkitemCodeSequence") or []
    if len(codes) != 1 or not codes[0].get("CodeValue"):
        raise WorkitemError(400, "Scheduled Workitem Code Sequence must hold one coded AI task")
    code = codes[0]
    task = str(code.CodeValue)
    model = config.tasks.get(task) or (
        task if str(code.get("CodingSchemeDesignator", "")) == RADGATE_SCHEME else None
    )
    if model is None or model not in served:
        raise WorkitemError(400, "the AI task is not one this server performs (no served model for its code)")
    inputs = workitem_inputs(item, config)
    item.ProcedureStepState = SCHEDULED
    item.ScheduledProcedureStepPriority = priority
    return item, model, inputs


def workitem_inputs(item: Dataset, config: UpsConfig) -> list[InputInstance]:
    entries = item.get("InputInformationSequence") or []
    if not entries:
        raise WorkitemError(400, "Input Information Sequence must name the instances to process")
    base = config.source_dicomweb_url.rstrip("/") + "/"
    found: list[InputInstance] = []
    for entry in entries:
        study = checked_uid(entry.get("StudyInstanceUID"), "Input Information: Study Instance UID")
        series = checked_uid(entry.get("SeriesInstanceUID"), "Input Information: Series Instance UID")
        retrieval = entry.get("WADORSRetrievalSequence") or []
        url = str(retrieval[0].get("RetrieveURL", "")) if retrieval else base.rstrip("/")
        # Retrieve only from the configured source: a workitem must not point RadGate elsewhere.
        if not (url + "/").startswith(base):
            raise WorkitemError(400, "Retrieve URL must be under the configured DICOMweb source")
        refs = entry.get("ReferencedSOPSequence") or []
        if not refs:
            raise WorkitemError(400, "Input Information: Referenced SOP Sequence must list the instances")
        for ref in refs:
            found.append(
                InputInstance(
                    study,
                    series,
                    checked_uid(ref.get("ReferencedSOPClassUID"), "Referenced SOP Class UID"),
                    checked_uid(ref.get("ReferencedSOPInstanceUID"), "Referenced SOP Instance UID"),
                    base.rstrip("/"),
                )
            )
            if len(found) > config.max_inputs:
                raise WorkitemError(400, f"a workitem may name at most {config.max_inputs} input instances")
    return found


def now_dt() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


class WorkitemStore:
    """Workitems by SOP Instance UID, in memory and as files; thread-safe."""

    def __init__(self, root: Path, *, limit: int = 10_000) -> None:
        self.root = root
        self.limit = limit
        self._lock = threading.RLock()
        self._items: dict[str, Dataset] = {}
        self._models: dict[str, str] = {}
        # Called with (uid, event type id, workitem) after each change: the UPS event channel.
        self.listeners: list[Callable[[str, int, Dataset], None]] = []
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in sorted(root.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                self._items[path.stem] = Dataset.from_json(data["workitem"])
                self._models[path.stem] = str(data["model"])
            except (OSError, ValueError, KeyError, TypeError) as exc:  # keep it aside, start anyway
                LOGGER.warning("unreadable workitem file set aside (%s)", type(exc).__name__)
                os.replace(path, path.with_suffix(".unreadable"))

    def _emit(self, uid: str, event_type: int) -> None:
        for listener in self.listeners:
            listener(uid, event_type, self._items[uid])

    def _save(self, uid: str) -> None:
        """Atomically, mode 0600: a workitem may carry the patient module of the RIS's order."""
        data = {"workitem": self._items[uid].to_json_dict(), "model": self._models[uid]}
        temp = self.root / f".{uid}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.root / f"{uid}.json")

    def create(self, item: Dataset, model: str, uid: str | None = None) -> str:
        with self._lock:
            if len(self._items) >= self.limit:
                raise WorkitemError(503, "the worklist is full")
            uid = uid or generate_uid(prefix="2.25.")
            if uid in self._items:
                raise WorkitemError(409, "a workitem with this UID exists")
            item.SOPClassUID = UPS_PUSH_SOP_CLASS
            item.SOPInstanceUID = uid
            item.ScheduledProcedureStepModificationDateTime = now_dt()
            self._items[uid] = item
            self._models[uid] = model
            self._save(uid)
            return uid

    def get(self, uid: str) -> Dataset:
        with self._lock:
            if uid not in self._items:
                raise WorkitemError(404, "no such workitem")
            return self._items[uid]

    def model(self, uid: str) -> str:
        return self._models[uid]

    def public(self, uid: str) -> Dataset:
        """The workitem as clients see it: never its Transaction UID (PS3.4 CC.2.5.1.2)."""
        copy = deepcopy(self.get(uid))  # Dataset(ds) would share the stored item's elements
        if "TransactionUID" in copy:
            del copy.TransactionUID
        return copy

    def search(self, state: str | None = None, limit: int = 100) -> Iterator[Dataset]:
        with self._lock:
            uids = [u for u, i in self._items.items() if state is None or i.ProcedureStepState == state]
        for uid in uids[:limit]:
            yield self.public(uid)

    def claim(self, uid: str, transaction_uid: str) -> Dataset:
        with self._lock:
            item = self.get(uid)
            if item.ProcedureStepState != SCHEDULED:
                raise WorkitemError(409, f"the workitem is {item.ProcedureStepState}, not SCHEDULED")
            item.ProcedureStepState = IN_PROGRESS
            item.TransactionUID = transaction_uid
            self._save(uid)
            self._emit(uid, 1)
            return item

    def update(self, uid: str, transaction_uid: str | None, changes: Dataset) -> Dataset:
        """Set attributes of a workitem; an IN PROGRESS one only with its Transaction UID."""
        with self._lock:
            item = self.get(uid)
            self._check_owner(item, transaction_uid)
            for element in changes:
                if element.keyword in (
                    "SOPInstanceUID",
                    "SOPClassUID",
                    "ProcedureStepState",
                    "TransactionUID",
                ):
                    raise WorkitemError(400, f"{element.keyword} cannot be changed by an update")
                item[element.tag] = element
            self._save(uid)
            if "ProcedureStepProgressInformationSequence" in changes:
                self._emit(uid, 3)
            return item

    def finish(
        self, uid: str, transaction_uid: str | None, state: str, changes: Dataset | None = None
    ) -> Dataset:
        """Move an IN PROGRESS workitem to COMPLETED or CANCELED (its owner only)."""
        if state not in (COMPLETED, CANCELED):
            raise WorkitemError(400, "Procedure Step State must be COMPLETED or CANCELED")
        with self._lock:
            item = self.get(uid)
            if item.ProcedureStepState != IN_PROGRESS:
                raise WorkitemError(409, f"the workitem is {item.ProcedureStepState}, not IN PROGRESS")
            self._check_owner(item, transaction_uid)
            for element in changes or Dataset():
                item[element.tag] = element
            item.ProcedureStepState = state
            self._save(uid)
            self._emit(uid, 1)
            return item

    def cancel_scheduled(self, uid: str, reason: str) -> Dataset:
        """A cancel request for a workitem nobody has claimed: it is canceled at once."""
        with self._lock:
            item = self.get(uid)
            if item.ProcedureStepState != SCHEDULED:
                raise WorkitemError(409, f"the workitem is {item.ProcedureStepState}: ask its performer")
            item.ProcedureStepState = CANCELED
            item.ProcedureStepProgressInformationSequence = [_progress(100, reason, canceled=True)]
            self._save(uid)
            self._emit(uid, 1)
            return item

    @staticmethod
    def _check_owner(item: Dataset, transaction_uid: str | None) -> None:
        if item.ProcedureStepState in (COMPLETED, CANCELED):
            raise WorkitemError(409, f"the workitem is {item.ProcedureStepState} (final)")
        if item.ProcedureStepState == IN_PROGRESS and transaction_uid != item.get("TransactionUID"):
            raise WorkitemError(409, "the Transaction UID does not match the workitem's performer")


def _progress(percent: int, description: str, *, canceled: bool = False) -> Dataset:
    progress = Dataset()
    progress.ProcedureStepProgress = percent
    progress.ProcedureStepProgressDescription = description[:64]
    if canceled:
        progress.ProcedureStepCancellationDateTime = now_dt()
        progress.ReasonForCancellation = description[:1024]
    return progress
