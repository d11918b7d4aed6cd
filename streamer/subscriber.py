"""The receive stage: validate every message, track series and sequence gaps, record raw frames.

Runs in its own thread. Polls the input socket (SUB or PULL) with a short timeout and checks its
stop event, so it never blocks for long. Bad input is counted by reason and logged (rate-limited);
it never stops the stream. Raw frames are written to the recorder here, before the denoise queue, so
a slow denoiser never costs a recorded raw frame.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from .meta import compare_meta
from .protocol import Message, ProtocolError, decode
from .queues import FrameQueue
from .stats import RateLimitedLog, StreamStats
from .worker import Worker

__all__ = ["EndMarker", "InFrame", "Receiver", "SeriesState"]

log = logging.getLogger("n2a.stream")


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


@dataclass
class InFrame:
    """A validated raw frame on its way to the denoiser."""

    msg: Message
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
    failed
        Set when this thread fails.
    max_frame_bytes
        Larger frames are rejected (``too_large``).
    model_meta
        The checkpoint's acquisition ``meta`` (for ``meta_mismatch``).
    recorder
        Optional :class:`streamer.recorder.Recorder`; every valid message is recorded as received.
    """

    def __init__(self, *, socket: zmq.Socket, queue: FrameQueue, stats: StreamStats,
                 stop_event: threading.Event, failed: threading.Event, max_frame_bytes: int,
                 model_meta: dict[str, Any], recorder: Any = None) -> None:
        super().__init__(name="n2a-receive", stop_event=stop_event, failed=failed)
        self.socket, self.queue, self.stats = socket, queue, stats
        self.max_frame_bytes, self.model_meta, self.recorder = max_frame_bytes, model_meta, recorder
        self.rlog = RateLimitedLog(log, interval_s=1.0)
        self.current: SeriesState | None = None
        self._start_meta: dict[str, dict[str, Any]] = {}
        self._name_uses: dict[str, itertools.count] = {}
        self.ended = threading.Event()  # an `end` message arrived (for --exit-on-end)

    # ------------------------------------------------------------------ helpers
    def reject(self, reason: str, detail: str) -> None:
        self.stats.rejected.add(reason)
        self.rlog.warning(reason, "n2a-stream: rejected a message (%s): %s", reason, detail)

    def _new_series(self, msg: Message, meta: dict[str, Any], why: str) -> SeriesState:
        uses = self._name_uses.setdefault(msg.series, itertools.count())
        k = next(uses)
        name = msg.series if k == 0 else f"{msg.series}#{k + 1}"
        meta = dict(meta)
        state = SeriesState(name=name, input_series=msg.series, shape=msg.shape,
                            dtype=msg.header.get("dtype"), meta=meta,
                            mismatch=compare_meta(meta, self.model_meta),
                            epoch=int(self.stats.counts.get("series")))
        self.stats.counts.add("series")
        if state.mismatch:
            log.warning("n2a-stream: series %s: acquisition settings differ from the model's: %s",
                        name, ", ".join(state.mismatch))
        log.info("n2a-stream: new series %s (%s)", name, why)
        self.current = state
        return state

    def _series_for(self, msg: Message) -> SeriesState:
        cur = self.current
        meta = msg.header.get("meta") or self._start_meta.get(msg.series) or {}
        if cur is None or cur.input_series != msg.series:
            return self._new_series(msg, meta, "new series name")
        if cur.shape != msg.shape or cur.dtype != msg.header.get("dtype"):
            return self._new_series(msg, meta, f"frame shape/dtype changed to {msg.shape} "
                                               f"{msg.header.get('dtype')}")
        if cur.last_seq is not None and msg.seq <= cur.last_seq:
            return self._new_series(msg, meta, f"seq went back from {cur.last_seq} to {msg.seq} "
                                               f"(publisher restarted)")
        if meta and meta != cur.meta:
            cur.meta = dict(meta)
            cur.mismatch = compare_meta(cur.meta, self.model_meta)
        return cur

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
            if len(self._start_meta) > 64:  # bounded: forget the oldest series' settings
                self._start_meta.pop(next(iter(self._start_meta)))
            self._record(parts)
            return
        if msg.type == "end":
            self._record(parts)
            if self.current is not None and self.current.input_series == msg.series:
                self.queue.put(EndMarker(series=self.current, header=msg.header), marker=True)
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
        series = self._series_for(msg)
        if series.last_seq is not None and msg.seq > series.last_seq + 1:
            missing = msg.seq - series.last_seq - 1
            self.stats.counts.add("gaps", missing)
            self.rlog.warning("gap", "n2a-stream: %d frame(s) missing upstream in %s before seq %d",
                              missing, series.name, msg.seq)
        series.last_seq = msg.seq
        self._record(parts)
        self.stats.counts.add("frames_in")
        self.stats.rate_in.tick()
        t_enq = time.time_ns()
        item = InFrame(msg=msg, raw=raw, seq=msg.seq, t_acq_ns=msg.t_acq_ns, t_recv_ns=t_recv_ns,
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
    def work(self) -> None:
        while not self.stop_event.is_set():
            if not self.socket.poll(100, zmq.POLLIN):
                continue
            # Drain what is there, but look at the stop flag between messages.
            while not self.stop_event.is_set():
                try:
                    parts = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self.handle(parts, time.time_ns())
