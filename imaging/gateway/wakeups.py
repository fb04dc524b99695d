"""Event-driven wake-ups for the SCP's associations, instead of pynetdicom's 1 ms polling.

pynetdicom 3 runs two threads per association that poll: the DUL reactor sleeps 1 ms whenever
it finds nothing to do, and the association reactor sleeps 1 ms between looks at the DIMSE
queue. On a C-STORE that costs a wake-up delay when the request is complete and another when
the response waits to be sent; on a busy machine each ``sleep`` can last much longer than 1 ms.
Installed on an acceptor association before it starts (``install``):

- the DUL thread blocks in ``select`` on its socket *and* an eventfd that ``send_pdu`` signals,
  so it wakes when the peer sends or when the association has something to send;
- the association thread blocks on the DIMSE message queue (its ``_reactor_checkpoint`` stands
  in for the ``threading.Event`` with the same pause/resume behaviour);
- PDUs are read with ``recv_into`` into one buffer instead of 4 KiB ``recv`` calls.

Both threads still wake at least every ``IDLE_WAIT`` seconds, so timers, release, abort and
kill are noticed as before. Linux (eventfd).
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import ssl
import threading
import weakref
from collections.abc import Callable
from typing import Any

from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

__all__ = ["IDLE_WAIT", "install"]

IDLE_WAIT = 0.005  # seconds a reactor may block with nothing to do


class _MessageGate:
    """The association reactor's checkpoint: ``set``/``clear``/``is_set`` as the Event it
    replaces; ``wait`` also blocks until a DIMSE message is queued (at most ``IDLE_WAIT``)."""

    def __init__(self, messages: queue.Queue[Any]) -> None:
        self._event = threading.Event()
        self._event.set()
        self._messages = messages

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._event.is_set():
            messages = self._messages
            with messages.not_empty:  # the queue's own condition: put() notifies it
                if not messages.queue:
                    messages.not_empty.wait(IDLE_WAIT)
        return self._event.wait(timeout)  # paused meanwhile (send_*/release): wait for resume


class _WakingSocket(AssociationSocket):
    """An ``AssociationSocket`` whose ``ready`` blocks until data or a wake-up (see module)."""

    _wake_fd: int

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        dul = self.assoc.dul
        idle = not dul.event_queue.queue and not dul.to_provider_queue.queue
        try:
            watched: list[Any] = [sock, self._wake_fd]
            readable, _, _ = select.select(watched, [], [], IDLE_WAIT if idle else 0)
        except (OSError, TimeoutError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed, as pynetdicom does
            return False
        if self._wake_fd in readable:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wake_fd)
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        return sock in readable

    def recv(self, nr_bytes: int) -> bytearray:
        """Exactly ``nr_bytes`` (fewer only when the peer closed), read into one buffer."""
        sock = self.socket
        assert sock is not None
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        nr_read = 0
        while nr_read < nr_bytes:
            count = sock.recv_into(view[nr_read:], nr_bytes - nr_read)
            if not count:  # the peer closed: what was read
                view.release()
                del buffer[nr_read:]
                return buffer
            nr_read += count
        view.release()
        return buffer


def install(assoc: Association) -> None:
    """Replace polling by wake-ups on an acceptor association not yet started."""
    dul = assoc.dul
    sock = dul.socket
    if sock is None or type(sock) is not AssociationSocket:
        return  # something else already customised it: leave it alone
    wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    sock.__class__ = _WakingSocket
    cast_sock: _WakingSocket = sock  # type: ignore[assignment]
    cast_sock._wake_fd = wake_fd
    weakref.finalize(sock, os.close, wake_fd)  # once neither reactor can select on it
    send_pdu: Callable[[Any], None] = dul.send_pdu

    def send_and_wake(primitive: Any) -> None:
        send_pdu(primitive)
        with contextlib.suppress(OSError):
            os.eventfd_write(wake_fd, 1)

    dul.send_pdu = send_and_wake  # type: ignore[method-assign]
    dul._run_loop_delay = 0.0  # the DUL blocks in ready() instead of sleeping
    assoc._reactor_checkpoint = _MessageGate(assoc.dimse.msg_queue)  # type: ignore[assignment]
