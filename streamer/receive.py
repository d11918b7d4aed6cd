"""The receive stage: validate every message, track series and sequence gaps, record raw frames.

Runs in its own thread. Polls the input socket (SUB or PULL) with a short timeout and checks its
stop event, so it never blocks for long. Bad input is counted by reason and logged (rate-limited);
it never stops the stream, and neither does an unexpected error on one message (counted as
``receive_error``). Raw frames are written to the recorder here, before the denoise queue, so a slow
denoiser never costs a recorded raw frame.

Frames that never arrived are counted, by where they were lost:

- ``gaps``: jumps in ``seq`` within a series, and the frames before the first one seen of a series
  (``seq`` > 0: its start was missed, e.g. n2a-stream joined late). Lost upstream, or in transit.
- ``dropped_input``: a jump in ``seq`` seen while the input socket had a backlog of at least its
  receive high-water mark (now or within the last second), i.e. this thread was behind and
  ZeroMQ's queue was full: lost at our own high-water mark. ZeroMQ says nothing when it drops at a high-water mark, so this is inferred; an
  upstream gap that happens to arrive during such a backlog is counted here too.
- A jump of more than :data:`~streamer.protocol.MAX_SEQ_JUMP` frames starts a new series (the
  publisher renumbered) and counts nothing, nor does a first ``seq`` above it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from .meta import compare_meta
from .protocol import MAX_SEQ_JUMP, MAX_SERIES_CHARS, Message, ProtocolError, decode
from .queues import FrameQueue
from .stats import RateLimitedLog, StreamStats
from .worker import Worker

__all__ = ["MAX_TRACKED_SERIES", "MIN_FRAME_SIDE", "EndMarker", "InFrame", "Receiver",
           "SeriesState"]

log = logging.getLogger("n2a.stream")

#: Smallest frame side denoised: the generators' ``noise2atom.models.MIN_SIDE`` (they reflect-pad
#: to a multiple of 8), kept here so the receive stage need not import torch.
MIN_FRAME_SIDE = 5
#: Input series remembered (last ``seq``, ``#k`` numbering, ``start`` meta); the oldest is forgotten.
MAX_TRACKED_SERIES = 64
#: After a disconnect, ZeroMQ reconnects by itself (CONNECT_RETRIED follows) unless the connection
#: broke on a protocol error such as a part over ``MAXMSGSIZE``; then it gives up, and so waits this.
_RECONNECT_WAIT_S = 2.0


def _missed_start(seq: int) -> int:
    """Frames missed before the first frame seen of a series (none counted past a renumbering)."""
    return seq if seq <= MAX_SEQ_JUMP else 0


@dataclass
class SeriesState:
    """One output series: an input series name plus one frame shape and dtype.

    ``name`` is the series name used on output: the input name, with ``#k`` appended when the same
    input name starts over (a new shape, or ``seq`` going back after a publisher restart).
    """

    name: str
    input_series: str
    shape: tuple[int, int] | None
    dtype: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    mismatch: list[str] = field(default_factory=list)
    last_seq: int | None = None
    epoch: int = 0
    index: int = 1  # k of the "#k" suffix (1: none)


@dataclass
class InFrame:
    """A validated raw frame on its way to the denoiser."""

    raw: np.ndarray
    seq: int
    t_acq_ns: int
    t_recv_ns: int
    t_enq_ns: int
    receive_ns: int
    series: SeriesState


@dataclass
class EndMarker:
    """The input series ended (passed through the stages so the output says so too)."""

    series: SeriesState
    header: dict[str, Any]


class Receiver(Worker):
    """Receive stage thread.

    Parameters
    ----------
    socket
        A connected SUB (subscribed) or PULL socket; used only by this thread.
    queue
        The bounded queue to the denoiser.
    stats
        Shared counters.
    stop_event
        Stop taking input.
    max_frame_bytes
        Larger frames are rejected (``too_large``).
    model_meta
        The checkpoint's acquisition ``meta`` (for ``meta_mismatch``).
    recorder
        Optional :class:`streamer.recorder.Recorder`; every valid message is recorded as received.
    rcvhwm
        The input socket's receive high-water mark (a gap seen with this many messages backlogged
        counts as ``dropped_input``).
    hwm_for
        Optional ``message bytes -> high-water mark``: on each new series the receive high-water
        mark is set from the series' frame size (a memory budget, not a message count).
    monitor, source
        Optional monitor socket of ``socket`` (``EVENT_DISCONNECTED | EVENT_CONNECT_RETRIED``) and
        the address it connects to: a connection ZeroMQ closed for good (a message part over
        ``MAXMSGSIZE``) is counted as rejected ``zmq_refused`` and connected again.
    delay_s
        Diagnostic: sleep this long per message (makes this stage slow, to exercise the input
        high-water mark).
    """

    def __init__(self, *, socket: zmq.Socket, queue: FrameQueue, stats: StreamStats,
                 stop_event: threading.Event, max_frame_bytes: int,
                 model_meta: dict[str, Any], recorder: Any = None, rcvhwm: int = 1000,
                 monitor: zmq.Socket | None = None, source: str | None = None,
                 delay_s: float = 0.0, hwm_for: Any = None) -> None:
        super().__init__(name="n2a-receive", stop_event=stop_event)
        self.socket, self.queue, self.stats = socket, queue, stats
        self.max_frame_bytes, self.model_meta, self.recorder = max_frame_bytes, model_meta, recorder
        self.rcvhwm, self.monitor, self.source, self.delay_s = rcvhwm, monitor, source, delay_s
        self.hwm_for = hwm_for
        self.rlog = RateLimitedLog(log, interval_s=1.0)
        # Bounded tables, oldest first: input series name -> its state / its `start` meta.
        self._series: OrderedDict[str, SeriesState] = OrderedDict()
        self._start_meta: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._backlog = 0  # messages read since the socket was last found empty
        self._behind_until = 0.0  # monotonic time until which we count as behind (see _count_missing)
        self._reconnect_deadline: float | None = None
        self.ended = threading.Event()  # an `end` message arrived (for --exit-on-end)

    # ------------------------------------------------------------------ helpers
    def reject(self, reason: str, detail: str) -> None:
        self.stats.rejected.add(reason)
        self.rlog.warning(reason, "n2a-stream: rejected a message (%s): %.500s", reason, detail)

    def _new_series(self, msg: Message, meta: dict[str, Any], prev: SeriesState | None,
                    why: str) -> SeriesState:
        index = prev.index + 1 if prev is not None else 1
        suffix = f"#{index}" if index > 1 else ""
        name = msg.series[:MAX_SERIES_CHARS - len(suffix)] + suffix
        meta = dict(meta)
        state = SeriesState(name=name, input_series=msg.series, shape=msg.shape,
                            dtype=msg.header.get("dtype"), meta=meta,
                            mismatch=compare_meta(meta, self.model_meta),
                            epoch=int(self.stats.counts.get("series")), index=index)
        self.stats.counts.add("series")
        if self.hwm_for is not None:
            hwm = self.hwm_for(msg.frame.nbytes)
            if hwm != self.rcvhwm:  # ZeroMQ applies a new high-water mark to connected pipes too
                self.socket.rcvhwm = self.rcvhwm = hwm
        if state.mismatch:
            log.warning("n2a-stream: series %s: acquisition settings differ from the model's: %s",
                        name, ", ".join(state.mismatch))
        log.info("n2a-stream: new series %.300s (%s)", name, why)
        self._series[msg.series] = state
        self._series.move_to_end(msg.series)
        while len(self._series) > MAX_TRACKED_SERIES:
            self._series.popitem(last=False)
        return state

    def _series_for(self, msg: Message) -> tuple[SeriesState, int]:
        """The series of a frame and how many of its frames went missing just before it."""
        seq = msg.seq
        meta = msg.header.get("meta") or self._start_meta.get(msg.series) or {}
        cur = self._series.get(msg.series)
        if cur is None:
            return self._new_series(msg, meta, None, "new series name"), _missed_start(seq)
        last = cur.last_seq if cur.last_seq is not None else -1
        if cur.shape != msg.shape or cur.dtype != msg.header.get("dtype"):
            missing = (seq - last - 1 if last < seq <= last + 1 + MAX_SEQ_JUMP
                       else _missed_start(seq) if seq <= last else 0)
            return self._new_series(msg, meta, cur, f"frame shape/dtype changed to {msg.shape} "
                                                    f"{msg.header.get('dtype')}"), missing
        if seq <= last:
            return self._new_series(msg, meta, cur, f"seq went back from {last} to {seq} "
                                                    f"(publisher restarted)"), _missed_start(seq)
        if seq - last - 1 > MAX_SEQ_JUMP:
            return self._new_series(msg, meta, cur, f"seq jumped from {last} to {seq} "
                                                    f"(renumbered; not counted as lost)"), 0
        self._series.move_to_end(msg.series)
        if meta and meta != cur.meta:
            cur.meta = dict(meta)
            cur.mismatch = compare_meta(cur.meta, self.model_meta)
        return cur, seq - last - 1

    def _count_missing(self, series: SeriesState, seq: int, missing: int) -> None:
        # Behind: a backlog of rcvhwm messages now or within the last second (the socket can look
        # empty for a moment while ZeroMQ's I/O thread refills it from the TCP buffers).
        if self._backlog >= self.rcvhwm or time.monotonic() < self._behind_until:
            self.stats.counts.add("dropped_input", missing)
            self.rlog.warning("drop_input", "n2a-stream: %d frame(s) lost at the input high-water "
                              "mark (%d messages backlogged) in %.300s before seq %d", missing,
                              self._backlog, series.name, seq)
            return
        self.stats.counts.add("gaps", missing)
        self.rlog.warning("gap", "n2a-stream: %d frame(s) missing upstream in %.300s before seq %d",
                          missing, series.name, seq)

    # ------------------------------------------------------------------ one message
    def handle(self, parts: list[Any], t_recv_ns: int) -> None:
        payload_bytes = sum(len(p) for p in parts[1:])
        if payload_bytes > self.max_frame_bytes:
            self.reject("too_large", f"payload of {payload_bytes} bytes exceeds --max-frame-bytes "
                                     f"{self.max_frame_bytes} (got {len(parts)} parts)")
            return
        try:
            msg = decode(parts)
        except ProtocolError as e:
            self.reject(e.reason, str(e))
            return
        if msg.type == "start":
            self._start_meta[msg.series] = dict(msg.meta)
            self._start_meta.move_to_end(msg.series)
            while len(self._start_meta) > MAX_TRACKED_SERIES:
                self._start_meta.popitem(last=False)
            self._record(parts)
            return
        if msg.type == "end":
            self._record(parts)
            state = self._series.get(msg.series)
            if state is not None:
                self.queue.put(EndMarker(series=state, header=msg.header), marker=True)
            self.ended.set()
            return
        raw = msg.frame
        if len(msg.arrays) != 1:
            self.reject("parts", f"an input frame has one payload (got parts {list(msg.arrays)})")
            return
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            n = int(raw.size - np.count_nonzero(np.isfinite(raw)))
            self.reject("non_finite", f"frame seq {msg.seq} of {msg.series} must be finite "
                                      f"(got {n} NaN/Inf values)")
            return
        if min(raw.shape) < MIN_FRAME_SIDE:
            self.reject("too_small", f"frame seq {msg.seq} must be at least {MIN_FRAME_SIDE}x"
                                     f"{MIN_FRAME_SIDE} to be denoised (got {raw.shape})")
            return
        series, missing = self._series_for(msg)
        if missing > 0:
            self._count_missing(series, msg.seq, missing)
        series.last_seq = msg.seq
        self._record(parts)
        self.stats.counts.add("frames_in")
        self.stats.rate_in.tick()
        t_enq = time.time_ns()
        item = InFrame(raw=raw, seq=msg.seq, t_acq_ns=msg.t_acq_ns, t_recv_ns=t_recv_ns,
                       t_enq_ns=t_enq, receive_ns=t_enq - t_recv_ns, series=series)
        self._enqueue(item)

    def _record(self, parts: list[Any]) -> None:
        if self.recorder is not None:
            self.recorder.write("raw", parts)

    def _enqueue(self, item: InFrame) -> None:
        if self.queue.policy == "latest":
            dropped = self.queue.put(item)
            if dropped is not None:
                self.stats.counts.add("dropped")
                self.rlog.warning("drop", "n2a-stream: denoiser behind, dropped frame seq %d of %s "
                                          "(%d dropped so far)", dropped.seq, dropped.series.name,
                                  self.stats.counts.get("dropped"))
            return
        while True:
            try:
                self.queue.put(item, timeout=0.1)
                return
            except TimeoutError:
                if self.stop_event.is_set():
                    self.stats.counts.add("dropped_at_stop")
                    return

    # ------------------------------------------------------------------ loop
    def _handle_safely(self, parts: list[Any], t_recv_ns: int) -> None:
        """One message; an unexpected error is counted and logged, and the next message comes."""
        try:
            self.handle(parts, t_recv_ns)
        except Exception as e:  # noqa: BLE001 - one message must not stop the stream
            self.stats.rejected.add("receive_error")
            self.rlog.warning("receive_error", "n2a-stream: the receive stage failed on a message "
                              "and skipped it: %.500r", e)

    def _watch_connection(self, readable: bool) -> None:
        """Read monitor events; connect again when ZeroMQ closed the connection for good."""
        from zmq.utils.monitor import recv_monitor_message

        while readable:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            if event == zmq.EVENT_DISCONNECTED:
                self._reconnect_deadline = time.monotonic() + _RECONNECT_WAIT_S
            elif event == zmq.EVENT_CONNECT_RETRIED:
                self._reconnect_deadline = None  # ZeroMQ reconnects by itself
        if self._reconnect_deadline is None or time.monotonic() < self._reconnect_deadline:
            return
        self._reconnect_deadline = None
        self.stats.rejected.add("zmq_refused")
        self.rlog.warning("zmq_refused", "n2a-stream: ZeroMQ closed the input connection on a "
                          "protocol error (a message part over --max-frame-bytes?); connecting "
                          "to %s again", self.source)
        try:
            self.socket.disconnect(self.source)
        except zmq.ZMQError:
            pass  # the session is already gone
        self.socket.connect(self.source)

    def work(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        if self.monitor is not None:
            poller.register(self.monitor, zmq.POLLIN)
        while not self.stop_event.is_set():
            ready = dict(poller.poll(100))
            if self.monitor is not None:
                self._watch_connection(self.monitor in ready)
            if self.socket not in ready:
                continue
            # Drain what is there, but look at the stop flag between messages.
            self._backlog = 0
            while not self.stop_event.is_set():
                try:
                    parts = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._backlog += 1
                if self._backlog >= self.rcvhwm:
                    self._behind_until = time.monotonic() + 1.0
                if self.delay_s:
                    time.sleep(self.delay_s)
                self._handle_safely(parts, time.time_ns())
