"""The viewer's network side: a thread that drains a ZeroMQ SUB socket into a one-slot buffer.

The thread owns its socket (ZeroMQ sockets are not thread-safe) and touches no Qt object. It decodes
every message with `streamer.protocol.decode`, keeps only the newest frame in a `LatestSlot`, and
records what the GUI needs to know in a small locked status record (counters, the last start/end,
arrival rate, latency). The GUI polls `take()` and `status()` from its own timer.

Slow-consumer policy: the receiver drains the socket as fast as messages arrive, so the publisher's
queue towards the viewer stays empty; if the GUI is slower than the stream, older frames are replaced
in the slot and counted as display skips. Nothing upstream waits for the viewer.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Any

import numpy as np
import zmq

from streamer import protocol
from streamer.net import subscriber_socket
from streamer.security import CurveKeys
from streamer.stats import LatencyWindow, RateMeter
from streamer.worker import Worker
from viewer.slot import LatestSlot

__all__ = ["FrameHeader", "ReceivedFrame", "ReceiverStatus", "FrameReceiver", "ReceiverError",
           "normalise_address"]


class ReceiverError(RuntimeError):
    """The receiver thread failed or did not stop in time."""


def normalise_address(source: str) -> str:
    """Turn ``HOST:PORT``, ``PORT`` or a full ZeroMQ endpoint into a ``tcp://`` endpoint.

    Examples
    --------
    >>> normalise_address("5556")
    'tcp://127.0.0.1:5556'
    >>> normalise_address("microscope-pc:5556")
    'tcp://microscope-pc:5556'
    >>> normalise_address("ipc:///tmp/n2a")
    'ipc:///tmp/n2a'
    """
    source = source.strip()
    if "://" in source:
        return source
    if source.isdigit():
        return f"tcp://127.0.0.1:{int(source)}"
    host, sep, port = source.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"source must be PORT, HOST:PORT or a ZeroMQ endpoint like tcp://HOST:PORT (got {source!r})")
    return f"tcp://{host}:{int(port)}"


@dataclasses.dataclass(frozen=True)
class FrameHeader:
    """The header of one received frame (kept for every frame, displayed or skipped)."""

    index: int
    series: str
    seq: int
    header: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ReceivedFrame:
    """One decoded output frame, as the GUI sees it.

    Attributes
    ----------
    index : int
        Position of the message in everything this receiver got (start/frame/end alike); lets the
        GUI order frames against start and end messages.
    series, seq : str, int
        The series name and the frame's sequence number.
    header : dict
        The full decoded header (css values, timing, engine, model, dropped, gaps, ...).
    raw, denoised : numpy.ndarray or None
        The payload parts, when the message carries them.
    t_recv_ns : int
        Wall-clock arrival time (``time.time_ns``), comparable with the header's ``t_acq_ns``.
    """

    index: int
    series: str
    seq: int
    header: dict[str, Any]
    raw: np.ndarray | None
    denoised: np.ndarray | None
    t_recv_ns: int


@dataclasses.dataclass(frozen=True)
class ReceiverStatus:
    """A consistent snapshot of the receiver's counters, taken under its lock."""

    address: str
    messages: int
    frames: int
    decode_errors: int
    last_decode_error: str | None
    last_frame_index: int
    last_start_index: int
    last_end_index: int
    last_end_series: str | None
    seconds_since_message: float | None
    fps_in: float
    latency_p50_ms: float
    latency_p99_ms: float
    display_skips: int
    headers_overflowed: int
    error: BaseException | None
    running: bool


def _frame_from_message(msg: Any, *, index: int, t_recv_ns: int) -> ReceivedFrame:
    arrays = dict(msg.arrays)
    raw = arrays.get("raw")
    denoised = arrays.get("denoised")
    if raw is None and denoised is None:
        raise protocol.ProtocolError(
            f"a frame for the viewer needs a 'raw' or 'denoised' part (got parts {sorted(arrays)})",
            reason="parts",
        )
    return ReceivedFrame(
        index=index,
        series=str(msg.series),
        seq=int(msg.seq),
        header=dict(msg.header),
        raw=raw,
        denoised=denoised,
        t_recv_ns=t_recv_ns,
    )


class FrameReceiver:
    """Subscribe to `address` on a background thread and keep the newest frame.

    Parameters
    ----------
    address : str
        ZeroMQ endpoint of ``n2a-stream``'s output, e.g. ``tcp://127.0.0.1:5556``.
    poll_ms : int
        Poll timeout; bounds how long `stop` waits for the thread to notice.
    latency_window_s : float
        Span of the latency percentiles and the arrival rate.
    rcvhwm : int
        Receive high-water mark (messages). Small on purpose: only the newest frame matters.
    history : int
        How many frame headers (for the CSS plot) are kept until the GUI takes them; older ones
        fall off (counted in `ReceiverStatus.headers_overflowed`).
    curve : streamer.security.CurveKeys, optional
        Connect as an authenticated CURVE client (for ``n2a-stream --curve-keys DIR``). Without the
        right keys the handshake never completes and no message arrives: the viewer keeps waiting.

    Examples
    --------
    >>> with FrameReceiver(address="tcp://127.0.0.1:1") as rx:
    ...     rx.take() is None
    True
    """

    def __init__(
        self,
        *,
        address: str,
        poll_ms: int = 50,
        latency_window_s: float = 5.0,
        rcvhwm: int = 16,
        history: int = 600,
        curve: CurveKeys | None = None,
    ) -> None:
        self.address = normalise_address(address)
        self.curve = curve
        self._poll_ms = int(poll_ms)
        self._rcvhwm = int(rcvhwm)
        self._slot: LatestSlot[ReceivedFrame] = LatestSlot()
        self._headers: collections.deque[FrameHeader] = collections.deque(maxlen=int(history))
        self._headers_overflowed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._connected = False
        self._thread: Worker | None = None
        self._context = zmq.Context()
        self._latency = LatencyWindow(window_s=latency_window_s)
        self._rate = RateMeter(window_s=min(latency_window_s, 2.0))
        self._messages = 0
        self._frames = 0
        self._decode_errors = 0
        self._last_decode_error: str | None = None
        self._last_frame_index = -1
        self._last_start_index = -1
        self._last_end_index = -1
        self._last_end_series: str | None = None
        self._last_message_t: float | None = None

    # -- owner side -------------------------------------------------------------------------

    def start(self, *, timeout: float = 5.0) -> FrameReceiver:
        """Start the thread and wait until its socket is connected."""
        if self._thread is not None:
            raise ReceiverError(f"receiver for {self.address} already started")
        self._thread = Worker(name=f"n2a-view-rx {self.address}", stop_event=self._stop,
                              work=self._run)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.maybe_raise()
            raise ReceiverError(f"receiver socket for {self.address} not ready within {timeout} s")
        if not self._connected:  # the thread failed before connecting: let it store its error
            self._thread.join(timeout)
        self.maybe_raise()
        return self

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the thread, close the socket and the context; raise if it does not stop in time."""
        self._stop.set()
        if self._thread is not None:
            try:
                self._thread.join_or_raise(timeout)
            except TimeoutError as e:
                raise ReceiverError(f"receiver for {self.address}: {e}") from e
        self._context.term()

    def __enter__(self) -> FrameReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def maybe_raise(self) -> None:
        """Re-raise, in the caller's thread, an exception that ended the receiver thread."""
        err = self._error
        if err is not None:
            raise ReceiverError(f"receiver for {self.address} failed: {err!r}") from err

    @property
    def _error(self) -> BaseException | None:
        return self._thread.error if self._thread is not None else None

    def take(self) -> ReceivedFrame | None:
        """The newest frame not yet taken, or None."""
        return self._slot.take()

    def take_headers(self) -> list[FrameHeader]:
        """The headers of all frames received since the last call (at most `history`), oldest first."""
        with self._lock:
            headers = list(self._headers)
            self._headers.clear()
            return headers

    def status(self) -> ReceiverStatus:
        """A snapshot of the counters."""
        now = time.monotonic()
        with self._lock:
            p50, p99 = (self._latency.percentile_ms(q, now=now) for q in (50, 99))
            return ReceiverStatus(
                address=self.address,
                messages=self._messages,
                frames=self._frames,
                decode_errors=self._decode_errors,
                last_decode_error=self._last_decode_error,
                last_frame_index=self._last_frame_index,
                last_start_index=self._last_start_index,
                last_end_index=self._last_end_index,
                last_end_series=self._last_end_series,
                seconds_since_message=None if self._last_message_t is None else now - self._last_message_t,
                fps_in=self._rate.rate(now=now),
                latency_p50_ms=math.nan if p50 is None else p50,
                latency_p99_ms=math.nan if p99 is None else p99,
                display_skips=self._slot.overwritten,
                headers_overflowed=self._headers_overflowed,
                error=self._error,
                running=self._thread is not None and self._thread.is_alive(),
            )

    # -- thread side ------------------------------------------------------------------------

    def _run(self) -> None:
        sock = None
        try:  # errors reach the owner through the Worker: maybe_raise / status
            sock = subscriber_socket(self._context, rcvhwm=self._rcvhwm, curve=self.curve)
            sock.connect(self.address)
            self._connected = True
            self._ready.set()
            while not self._stop.is_set():
                if not sock.poll(self._poll_ms, zmq.POLLIN):
                    continue
                # Drain what is queued, but look at the stop flag now and then.
                for _ in range(256):
                    try:
                        parts = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._handle(parts)
        finally:
            if sock is not None:
                sock.close(linger=0)
            self._ready.set()

    def _handle(self, parts: list[zmq.Frame]) -> None:
        t_recv_ns = time.time_ns()
        now = time.monotonic()
        with self._lock:
            index = self._messages
            self._messages += 1
            self._last_message_t = now
        try:
            msg = protocol.decode(parts)
            frame = _frame_from_message(msg, index=index, t_recv_ns=t_recv_ns) if msg.type == "frame" else None
        except Exception as e:  # a bad message must never stop the viewer: count and show it
            with self._lock:
                self._decode_errors += 1
                self._last_decode_error = f"{type(e).__name__}: {e}"
            return
        with self._lock:
            if msg.type == "start":
                self._last_start_index = index
            elif msg.type == "end":
                self._last_end_index = index
                self._last_end_series = str(msg.series)
            elif frame is not None:
                self._frames += 1
                self._last_frame_index = index
                self._rate.tick(now)
                if len(self._headers) == self._headers.maxlen:
                    self._headers_overflowed += 1
                self._headers.append(FrameHeader(index=index, series=frame.series, seq=frame.seq,
                                                 header=frame.header))
                t_acq = frame.header.get("t_acq_ns")
                if isinstance(t_acq, int):
                    self._latency.add(t_recv_ns - t_acq, t=now)
        if frame is not None:
            self._slot.put(frame)
