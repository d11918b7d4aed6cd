"""The bounded, non-blocking publisher of completed frames (protocol v1), on its own thread.

The caller (Swift's acquisition thread) only ever calls :meth:`ScanFrameSender.offer`, which puts the
frame into a small ring and returns at once: the ring keeps the newest ``max_queue`` frames and
counts every frame pushed out of it (``dropped["queue_full"]``). A worker thread owns the ZeroMQ
socket, encodes with :func:`streamer.protocol.encode_frame` and sends without blocking.

``pattern="pub"`` (what ``n2a-stream`` subscribes to by default) binds an XPUB socket, so the worker
knows whether an ``n2a-stream`` is subscribed: while none is, frames are not sent into the void but
counted as ``dropped["no_receiver"]``. The XPUB does not drop silently when its send buffer is full
(``XPUB_NODROP``): like PUSH (``n2a-stream --pattern pull``), it makes the worker wait for room, up
to ``send_timeout_s``, while new frames collect in the ring; a frame that still cannot be handed
to ZeroMQ (no PULL peer, or a peer that stopped reading) is counted as ``dropped["send_timeout"]``.
So the only places a frame is lost are counted ones. Only the worker ever waits; nothing grows
without bound.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Literal

import numpy as np
import zmq

from streamer.protocol import COPY_THRESHOLD, ProtocolError, encode_frame, encode_start

__all__ = ["ScanFrameSender"]

DROP_REASONS = ("queue_full", "no_receiver", "send_timeout", "encode")


class ScanFrameSender:
    """Publish frames from any thread without waiting; the worker sends them.

    Parameters
    ----------
    address
        Where to bind, e.g. ``tcp://127.0.0.1:5555`` (port 0: a free port, see :attr:`endpoint`).
    pattern
        ``"pub"`` (XPUB; ``n2a-stream`` default) or ``"push"`` (``n2a-stream --pattern pull``).
    max_queue
        Frames waiting for the worker; the oldest is dropped (and counted) when a new one comes.
    send_timeout_s
        How long the worker waits for room in ZeroMQ's send buffer before counting a frame lost.
    context
        A ZeroMQ context (default: the process's shared one).
    """

    def __init__(self, *, address: str = "tcp://127.0.0.1:5555",
                 pattern: Literal["pub", "push"] = "pub", max_queue: int = 8,
                 send_timeout_s: float = 1.0, context: zmq.Context | None = None) -> None:
        if pattern not in ("pub", "push"):
            raise ValueError(f"pattern must be 'pub' or 'push' (got {pattern!r})")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1 (got {max_queue})")
        self.address, self.pattern, self.send_timeout_s = address, pattern, send_timeout_s
        self._ring: collections.deque = collections.deque(maxlen=max_queue)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._context = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started_series: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.endpoint: str | None = None
        self.offered = 0
        self.sent = 0
        self.subscribers = 0
        self.last_sent: tuple[str, int] | None = None
        self.last_error: str | None = None
        self.dropped = dict.fromkeys(DROP_REASONS, 0)

    # -- owner side ---------------------------------------------------------------------------
    def start(self) -> ScanFrameSender:
        """Bind (an error here is raised to the caller) and start the worker."""
        sock = self._context.socket(zmq.XPUB if self.pattern == "pub" else zmq.PUSH)
        sock.linger = 0
        sock.sndhwm = 16
        if self.pattern == "pub":
            sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every subscribe and unsubscribe, to count
            sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full buffer says so (Again), never drops
        else:
            sock.setsockopt(zmq.IMMEDIATE, 1)  # no peer: send fails at once instead of queueing
        try:
            sock.bind(self.address)
        except zmq.ZMQError as e:
            sock.close(0)
            raise OSError(f"n2a live: cannot bind {self.address} (got {e})") from e
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread = threading.Thread(target=self._run, name="n2a-live-sender", daemon=True)
        self._thread.start()
        return self

    def offer(self, frame: np.ndarray, *, series: str, seq: int, t_acq_ns: int,
              meta: dict[str, Any] | None = None) -> bool:
        """Queue a frame; never blocks. False when the ring was full (its oldest frame dropped)."""
        with self._cond:
            full = len(self._ring) == self._ring.maxlen
            if full:
                self.dropped["queue_full"] += 1
            self._ring.append((frame, series, seq, t_acq_ns, meta))
            self.offered += 1
            self._cond.notify()
        return not full

    @property
    def queued(self) -> int:
        return len(self._ring)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def error(self) -> BaseException | None:
        """The error the worker thread stopped on (None while it runs or stopped cleanly)."""
        return self._error

    def maybe_raise(self) -> None:
        """Raise the worker's error, if it stopped on one."""
        if self._error is not None:
            raise RuntimeError(f"n2a live sender stopped: {self._error}") from self._error

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (within ``timeout`` s, else raise) and close the socket."""
        self._stop.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"n2a live sender did not stop within {timeout} s")
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    # -- worker -------------------------------------------------------------------------------
    def _count_subscribers(self) -> None:
        if self.pattern != "pub":
            return
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscribers += 1
            elif msg[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)

    def _send(self, parts: list[Any]) -> bool:
        """Hand one message to ZeroMQ, waiting up to ``send_timeout_s`` for room; False if not."""
        deadline = time.monotonic() + self.send_timeout_s
        while True:
            try:
                self._sock.send(parts[0], (zmq.SNDMORE if len(parts) > 1 else 0) | zmq.NOBLOCK)
                break
            except zmq.Again:  # the buffer is full, or (PUSH) no peer: wait a little, not forever
                if self._stop.is_set() or time.monotonic() > deadline:
                    return False
                self._sock.poll(50, zmq.POLLOUT)
        last = len(parts) - 1
        for i, p in enumerate(parts[1:], start=1):  # the rest of a multipart message never blocks
            big = isinstance(p, np.ndarray) and p.nbytes >= COPY_THRESHOLD
            self._sock.send(p, zmq.SNDMORE if i < last else 0, copy=not big)
        return True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._count_subscribers()
                with self._cond:
                    if not self._ring:
                        self._cond.wait(0.05)
                    item = self._ring.popleft() if self._ring else None
                if item is not None:
                    self._publish(*item)
        except BaseException as e:  # noqa: BLE001 - reported to the owner by maybe_raise()
            self._error = e

    def _publish(self, frame, series, seq, t_acq_ns, meta) -> None:
        if self.pattern == "pub" and self.subscribers == 0:
            self.dropped["no_receiver"] += 1
            return
        try:
            parts = encode_frame(frame, seq=seq, series=series, t_acq_ns=t_acq_ns, meta=meta)
        except ProtocolError as e:  # one bad frame is counted and named, the worker goes on
            self.dropped["encode"] += 1
            self.last_error = str(e)
            return
        if series not in self._started_series:
            # A start message opens the series (a multipart message of one part; no payload).
            self._send(encode_start(series, meta=meta))
            self._started_series[series] = None
            if len(self._started_series) > 64:  # remember the recent series only
                self._started_series.popitem(last=False)
        if self._send(parts):
            self.sent += 1
            self.last_sent = (series, seq)
        else:
            self.dropped["send_timeout"] += 1

    def stats(self) -> dict[str, Any]:
        """Counts for the status line: offered, sent, queued, dropped by reason, subscribers."""
        return {"offered": self.offered, "sent": self.sent, "queued": self.queued,
                "dropped": dict(self.dropped), "subscribers": self.subscribers,
                "last_sent": self.last_sent, "t": time.monotonic()}
