"""UPS-RS subscriptions and the WebSocket event channel (DICOM PS3.18 11.10-11.12, PS3.4 CC.2.4).

A client subscribes an AE title to one workitem (``POST /ups-rs/workitems/{uid}/subscribers/{ae}``)
or to every workitem (the well-known UID ``1.2.840.10008.5.1.4.34.5``), then opens the event channel
``ws(s)://.../ups-rs/subscribers/{ae}`` (bearer token in the Authorization header). Each state change
of a workitem it follows arrives as one DICOM JSON event report: Affected SOP Instance UID, Event
Type ID (1 state report, 3 progress report), Procedure Step State, and the progress or the reason
for cancellation. Subscriptions live as long as the serving process (no deletion lock).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset

__all__ = [
    "EVENT_PROGRESS_REPORT",
    "EVENT_STATE_REPORT",
    "GLOBAL_SUBSCRIPTION_UID",
    "EventHub",
    "event_report",
]

GLOBAL_SUBSCRIPTION_UID = "1.2.840.10008.5.1.4.34.5"
EVENT_STATE_REPORT = 1
EVENT_PROGRESS_REPORT = 3
_AE_TITLE = re.compile(r"^[A-Za-z0-9 _.-]{1,16}$")
_MAX_QUEUED = 1000


def valid_ae_title(value: str) -> bool:
    return bool(_AE_TITLE.match(value)) and value.strip() == value


def event_report(uid: str, event_type: int, item: Dataset) -> dict[str, Any]:
    """The DICOM JSON of one UPS event report."""
    report = Dataset()
    report.AffectedSOPInstanceUID = uid
    report.EventTypeID = event_type
    report.ProcedureStepState = item.get("ProcedureStepState", "")
    progress = item.get("ProcedureStepProgressInformationSequence")
    if progress:
        report.ProcedureStepProgressInformationSequence = progress
    return report.to_json_dict()


class EventHub:
    """Who follows which workitem, and the open channels per AE title."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._global: set[str] = set()
        self._per_item: dict[str, set[str]] = {}
        self._channels: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]]] = {}

    def subscribe(self, ae: str, uid: str) -> None:
        with self._lock:
            if uid == GLOBAL_SUBSCRIPTION_UID:
                self._global.add(ae)
            else:
                self._per_item.setdefault(uid, set()).add(ae)

    def unsubscribe(self, ae: str, uid: str) -> None:
        with self._lock:
            if uid == GLOBAL_SUBSCRIPTION_UID:
                self._global.discard(ae)
            else:
                self._per_item.get(uid, set()).discard(ae)

    def followers(self, uid: str) -> set[str]:
        with self._lock:
            return self._global | self._per_item.get(uid, set())

    def listener(self) -> Callable[[str, int, Dataset], None]:
        """What the workitem store calls on every change (from any thread)."""
        return self.report

    def report(self, uid: str, event_type: int, item: Dataset) -> None:
        message = json.dumps(event_report(uid, event_type, item))
        for ae in self.followers(uid):
            with self._lock:
                channels = list(self._channels.get(ae, []))
            for loop, queue in channels:
                loop.call_soon_threadsafe(_offer, queue, message)

    def open(self, ae: str) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=_MAX_QUEUED)
        with self._lock:
            self._channels.setdefault(ae, []).append((asyncio.get_running_loop(), queue))
        return queue

    def close(self, ae: str, queue: asyncio.Queue[str]) -> None:
        with self._lock:
            self._channels[ae] = [(loop, q) for loop, q in self._channels.get(ae, []) if q is not queue]


def _offer(queue: asyncio.Queue[str], message: str) -> None:
    if queue.full():  # a client that does not read: drop its oldest report, never block the store
        queue.get_nowait()
    queue.put_nowait(message)
