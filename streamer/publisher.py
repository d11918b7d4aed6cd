"""The publish stage: rolling CSS, the output header, the send, and the denoised recording.

Runs in its own thread, fed by a bounded queue from the denoiser. The output socket is an XPUB (a PUB
that also sees subscriptions, so :attr:`Publisher.subscriptions` tells tests and the demo when a
viewer has joined). A PUB socket never blocks: a subscriber that falls ``sndhwm`` messages behind
loses messages inside ZeroMQ, which that subscriber sees as a jump in ``seq``.

CSS compares consecutive frames only: after a frame lost anywhere (upstream gap, drop, engine
error) the next frame's ``css`` is nil and the rolling window starts again, and frames smaller than
the SSIM window (11x11) carry no CSS. An unexpected error on one frame is counted
(``publish_error``) and the next frame goes out.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from .net import drain_subscriptions, send_message
from .protocol import encode_end, encode_frame, encode_start
from .queues import FrameQueue
from .stats import Counters, RateLimitedLog, StreamStats
from .receive import EndMarker, InFrame, SeriesState
from .worker import Worker

__all__ = ["CSS_MIN_SIDE", "END_FIELDS", "OutFrame", "Publisher"]

log = logging.getLogger("n2a.stream")

#: Smallest frame side with a CSS (the SSIM window is 11x11).
CSS_MIN_SIDE = 11
#: Fields of an input ``end`` passed on to the output ``end`` (scalars only).
END_FIELDS = ("count", "last_seq", "reason")


@dataclass
class OutFrame:
    """A denoised frame on its way out."""

    item: InFrame
    denoised: np.ndarray  # float32 in [0, 1]
    timing: dict[str, int] = field(default_factory=dict)
    scaling: Any = None  # the series' input scaling (noise2atom Normalisation) the denoiser used
    model_id: str | None = None  # the model that made this frame (changes when the learner swaps)
    resample: float | None = None  # the zoom the frame was denoised at (None: resampling off)
    lattice_average: int | None = None  # translations it was averaged over (None: the step is off)


class Publisher(Worker):
    """Publish stage thread.

    Parameters
    ----------
    socket
        The bound XPUB socket; used only by this thread.
    queue
        Denoised frames (and end markers) from the denoiser.
    stats
        Shared counters.
    stop_event
        Set when nothing more will arrive on ``queue`` (after the denoiser finished).
    make_css
        ``(scaling) -> (css_denoised, css_raw)`` pair of fresh ``noise2atom.metrics.RollingCSS`` objects for a
        new series (the raw one maps with the series' scaling); ``None``: no CSS (the css fields are nil).
    make_guard
        ``(scaling, dtype) -> noise2atom.guard.FidelityGuard`` for a new series; ``None``: no guard
        (``flags`` stays empty).
    engine_name, model_id
        For the output header.
    with_raw
        Send the raw frame as a second part.
    recorder
        Optional recorder; every published frame is recorded (denoised part only).
    hwm_for
        Optional ``message bytes -> high-water mark``: on each new series the send high-water mark
        (per subscriber) is set from the size of the series' output messages.
    """

    def __init__(self, *, socket: zmq.Socket, queue: FrameQueue, stats: StreamStats,
                 stop_event: threading.Event, make_css: Any,
                 engine_name: str, model_id: str, with_raw: bool, recorder: Any = None,
                 make_guard: Any = None, hwm_for: Any = None, learner: Any = None) -> None:
        super().__init__(name="n2a-publish", stop_event=stop_event)
        self.socket, self.queue, self.stats = socket, queue, stats
        self.make_css, self.engine_name, self.model_id = make_css, engine_name, model_id
        self.make_guard, self._guard, self._scaling = make_guard, None, None
        self.flag_counts = Counters()  # frames published with each guard flag
        self.with_raw, self.recorder, self.hwm_for = with_raw, recorder, hwm_for
        self.sndhwm = socket.sndhwm
        self.learner = learner  # told each frame's flags (it rolls a bad swap back)
        self.subscriptions = 0
        self._series: SeriesState | None = None
        self._css = None
        self._last_seq: int | None = None  # of the last frame published in this series
        self.rlog = RateLimitedLog(log, interval_s=1.0)

    def _drain_subscriptions(self) -> None:
        self.subscriptions = max(0, self.subscriptions + drain_subscriptions(self.socket))

    def _send(self, parts: list[Any]) -> None:
        send_message(self.socket, parts, flags=zmq.NOBLOCK)

    def _measure_with(self, series: SeriesState, scaling: Any) -> None:
        """Fresh CSS and guard for the series' input scaling."""
        self._scaling = scaling
        self._css = self.make_css(scaling) if self.make_css is not None and scaling is not None else None
        self._guard = (self.make_guard(scaling, series.dtype or "float32")
                       if self.make_guard is not None and scaling is not None else None)

    def _start_series(self, series: SeriesState, scaling: Any = None) -> None:
        if self._series is not None and self._series is not series:
            self._send(encode_end(self._series.name, reason="new series"))
        self._series = series
        self._last_seq = None
        if self.hwm_for is not None and series.shape is not None:
            pixel_bytes = 4 + (np.dtype(series.dtype).itemsize if self.with_raw else 0)
            hwm = self.hwm_for(int(np.prod(series.shape)) * pixel_bytes)
            if hwm != self.sndhwm:  # ZeroMQ applies a new high-water mark to connected pipes too
                self.socket.sndhwm = self.sndhwm = hwm
        self._measure_with(series, scaling)
        parts = encode_start(series.name, meta=series.meta, input_series=series.input_series,
                             shape=list(series.shape), meta_mismatch=series.mismatch)
        self._send(parts)
        if self.recorder is not None:
            self.recorder.write("denoised", parts)

    def publish(self, out: OutFrame) -> None:
        item = out.item
        if item.series is not self._series:
            self._start_series(item.series, out.scaling)
        elif out.scaling is not self._scaling:  # the denoiser could scale this series only now
            self._measure_with(item.series, out.scaling)
        t0 = time.perf_counter_ns()
        css = self._update_css(out)
        t1 = time.perf_counter_ns()
        flags = self._check(out)
        t_guard = time.perf_counter_ns()
        timing = dict(out.timing, receive=item.receive_ns, css=t1 - t0, guard=t_guard - t1)
        fields = self._output_fields(out, css, flags)
        now = time.time_ns()
        timing["receive_to_publish"] = now - item.t_recv_ns
        timing["acq_to_publish"] = now - item.t_acq_ns
        parts, record = self._encode(out, dict(timing=timing, **fields))
        t2 = time.perf_counter_ns()
        self._send(parts)
        t3 = time.perf_counter_ns()
        if record is not None:
            self.recorder.write("denoised", record)
        timing["send"] = t3 - t2
        self._count(item, css, flags, timing, out.resample, out.lattice_average)

    def _update_css(self, out: OutFrame) -> dict[str, float | None]:
        """This frame's CSS and rolling means (nil without CSS or after a missing frame)."""
        item = out.item
        css = dict(css=None, css_mean=None, css_raw=None, css_raw_mean=None)
        if self._css is not None and min(item.raw.shape) >= CSS_MIN_SIDE:
            css_den, css_raw = self._css
            if self._last_seq is not None and item.seq != self._last_seq + 1:
                css_den.reset()  # a frame is missing: never compare frames that are not consecutive
                css_raw.reset()
            css["css"], css["css_mean"] = css_den.update(out.denoised)
            css["css_raw"], css["css_raw_mean"] = css_raw.update(item.raw)
        self._last_seq = item.seq
        return css

    def _check(self, out: OutFrame) -> list[str]:
        """The fidelity guard's flags; it reuses the CSS's window moments when there are any."""
        if self._guard is None:
            return []
        flags = self._guard.check(
            out.item.raw, out.denoised,
            raw_moments=self._css[1].last if self._css is not None else None,
            out_moments=self._css[0].last if self._css is not None else None)
        for f in flags:
            self.flag_counts.add(f)
        return flags

    def _output_fields(self, out: OutFrame, css: dict[str, Any], flags: list[str]) -> dict[str, Any]:
        """The output header's fields (besides the frame's own and ``timing``)."""
        counts = self.stats.counts
        fields = dict(css, engine=self.engine_name, model=out.model_id or self.model_id,
                      dropped=counts.get("dropped") + counts.get("dropped_input"),
                      gaps=counts.get("gaps"), rejected=self.stats.rejected.total(),
                      meta_mismatch=list(out.item.series.mismatch), flags=flags,
                      resample=out.resample, lattice_average=out.lattice_average)
        if self.learner is not None:
            self.learner.observe(fields["model"], flags)
            fields["learn"] = self.learner.status()
        return fields

    def _encode(self, out: OutFrame, fields: dict[str, Any]) -> tuple[list[Any], list[Any] | None]:
        """The message to send and the one to record (``None`` when not recording)."""
        item = out.item
        header = dict(seq=item.seq, series=item.series.name, t_acq_ns=item.t_acq_ns,
                      meta=item.series.meta or None, **fields)
        if not self.with_raw:  # the record is the message sent: encoded once
            parts = encode_frame(out.denoised, parts=["denoised"], **header)
            return parts, parts if self.recorder is not None else None
        # The record leaves the raw part out (the receive stage records every raw frame).
        parts = encode_frame([out.denoised, item.raw], parts=["denoised", "raw"], **header)
        record = (encode_frame(out.denoised, parts=["denoised"], **header)
                  if self.recorder is not None else None)
        return parts, record

    def _count(self, item: InFrame, css: dict[str, Any], flags: list[str],
               timing: dict[str, int], resample: float | None, lattice_average: int | None) -> None:
        st = self.stats
        st.counts.add("published")
        st.rate_out.tick()
        st.latency.add(timing["acq_to_publish"])
        for k, v in timing.items():
            if k in st.stages:
                st.stages[k].add(v)
        st.add_css("css", css["css"])
        st.add_css("css_raw", css["css_raw"])
        st.set_last(**css, series=item.series.name, seq=item.seq,
                    meta_mismatch=list(item.series.mismatch), flags=flags, resample=resample,
                    lattice_average=lattice_average)

    def work(self) -> None:
        while True:
            self._drain_subscriptions()
            item = self.queue.get(timeout=0.05)
            if item is None:
                if self.stop_event.is_set():
                    break
                continue
            if isinstance(item, EndMarker):
                if self._series is item.series:
                    self._send(encode_end(item.series.name, **{
                        k: item.header[k] for k in END_FIELDS
                        if isinstance(item.header.get(k), (int, str))
                        and not isinstance(item.header[k], bool)
                        and len(str(item.header[k])) <= 256}))
                    self._series = None
                continue
            try:
                self.publish(item)
            except Exception as e:  # noqa: BLE001 - one frame must not stop the stream
                self.stats.rejected.add("publish_error")
                self.rlog.warning("publish_error", "n2a-stream: could not publish frame seq %d "
                                  "of %.300s: %.500r", item.item.seq, item.item.series.name, e)
        if self._series is not None:
            self._send(encode_end(self._series.name, reason="stream stopped"))
