"""The denoise stage: raw frame -> model units -> engine -> [0, 1] float32, in its own thread.

Fed by the bounded queue from the receive stage, feeding the one to the publish stage. The input
scaling is the series' own, and so is the sampling the network sees it at (see :class:`Denoiser`);
an engine error or a non-finite output on one frame is counted (``engine_error``,
``non_finite_output``) and the next frame goes on, until the engine has failed on ``max_failures``
frames in a row (:class:`EngineFailedError` stops the stream). With a learner (``n2a-stream
--learn``) the frame is offered to it, and a better engine it made is swapped in between two frames.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np

from .learner import Learner
from .publisher import OutFrame
from .queues import FrameQueue
from .receive import EndMarker, InFrame, SeriesState
from .stats import RateLimitedLog, StreamStats
from .worker import Worker

__all__ = ["Denoiser", "EngineFailedError"]

log = logging.getLogger("n2a.stream")


class EngineFailedError(RuntimeError):
    """The engine failed on every frame for too long: the stream cannot do its job."""


class Denoiser(Worker):
    """Denoise stage thread: raw -> model units -> engine -> [0, 1] float32.

    The raw -> model scaling is estimated from each series' first frame
    (:func:`noise2atom.scaling.estimate_scaling`) and kept for the rest of the series, so any
    detector's dtype, offset and gain works and CSS stays comparable within a series; a new series
    (new name, shape, dtype or a restart: a new ``SeriesState``) estimates it again.

    With ``resample`` (the default) the same first frame also gives the zoom that brings the atom
    columns' estimated width to the one the bundled model denoises best
    (:func:`noise2atom.scaling.series_zoom`: ``MODEL_SIGMA_PX``, zooms within ``ZOOM_RANGE``); every
    frame of the series is zoomed by it, denoised and zoomed back to its own shape
    (:func:`noise2atom.scaling.denoise_resampled`). The zoom goes into every output header
    (``resample``: 1.0 where it is denoised as it is; nil with ``resample=False``). The estimate runs
    here, once per series (an FFT and ring medians: ~80 ms at 512², ~0.4 s at 1024² on a 2-core
    CPU): frames arriving meanwhile wait in the input queue like behind a slow frame.

    With ``lattice_average`` (off by default) the raw frame averaged over its lattice's own
    translations is denoised a second time, and that output averaged over them
    (:mod:`noise2atom.lattice_average`; the translations are found in the series' first denoised
    frame and kept for the series, like the zoom). How many goes into every output header
    (``lattice_average``: 0 where no lattice was found; nil when off). It assumes that what repeats
    is the specimen, and costs 3-3.5x the engine's time on a frame of the same size on our 2-core
    CPU, the second engine call included (``bench/results/lattice-average-cpu.md``).
    """

    def __init__(self, *, engine: Any, inq: FrameQueue, outq: FrameQueue, stats: StreamStats,
                 input_done: threading.Event, stop_event: threading.Event,
                 delay_s: float = 0.0, max_failures: int = 50,
                 engine_name: str = "engine", model_id: str = "", learner: Learner | None = None,
                 resample: bool = True, lattice_average: bool = False) -> None:
        super().__init__(name="n2a-denoise", stop_event=stop_event)
        self.engine, self.inq, self.outq, self.stats = engine, inq, outq, stats
        self.input_done, self.delay_s = input_done, delay_s
        self.max_failures, self.engine_name = max_failures, engine_name
        self.failures = 0  # frames in a row the engine failed on
        self.rlog = RateLimitedLog(log, interval_s=1.0)
        from noise2atom import scaling  # once here, not per frame (it loads torch via checkpoint)

        self._scaling_lib = scaling
        self.norm = engine.config.normalisation  # replaced by each series' own scaling
        self._scaled_series: SeriesState | None = None
        self.resample = resample
        self.pitches: tuple[float, float] | None = None  # (pitch, target pitch) of this series
        self.zoom: float | None = None  # the zoom applied in this series (None: resampling off)
        self.up_order = 3  # spline order of a zoom up in this series (noise2atom.scaling.zoom_up_order)
        if resample:  # imported now, not on the first frame (~0.5 s: frames would queue or drop)
            import noise2atom.prior  # noqa: F401
            import scipy.ndimage  # noqa: F401
            import scipy.stats  # noqa: F401
        self.lattice_average = lattice_average
        self.offsets: np.ndarray | None = None  # this series' lattice translations (None: not yet found)
        if lattice_average:
            from noise2atom import lattice_average as lattice_lib

            self._lattice_lib = lattice_lib
        self.model_id, self.learner = model_id, learner
        self._learn_key: tuple | None = None
        self._learn_meta: Any = None

    def _put(self, item: Any, marker: bool = False) -> bool:
        while True:
            try:
                self.outq.put(item, timeout=0.1, marker=marker)
                return True
            except TimeoutError:
                if self.stop_event.is_set():  # hard stop: the publisher is gone
                    return False

    def _failed(self, item: InFrame, reason: str, error: str) -> None:
        """Count a frame the engine failed on; stop after ``max_failures`` in a row."""
        self.stats.rejected.add(reason)
        self.failures += 1
        self.rlog.warning(reason, "n2a-stream: the engine failed on frame seq %d of %.300s (%s): "
                          "%.500s", item.seq, item.series.name, reason, error)
        if self.failures >= self.max_failures:
            raise EngineFailedError(f"the {self.engine_name} engine failed on {self.failures} "
                                    f"frames in a row (expected at most {self.max_failures - 1}); "
                                    f"last error: {error}")

    def _scale_for(self, item: InFrame) -> None:
        """Estimate the input scaling from the series' first frame; fixed within the series."""
        if item.series is self._scaled_series:
            return
        self.pitches, self.zoom = None, (1.0 if self.resample else None)
        self.offsets = None
        try:
            self.norm = self._scaling_lib.estimate_scaling(item.raw)
            self._scaled_series = item.series
        except ValueError as e:  # e.g. a blank first frame: try again on the next one
            self.rlog.warning("scaling", "n2a-stream: cannot scale frame seq %d of %.300s yet "
                              "(%s); using the model's training scaling for it", item.seq,
                              item.series.name, e)
            self.norm = self.engine.config.normalisation
            return
        if self.resample:
            self._resample_for(item)

    def _resample_for(self, item: InFrame) -> None:
        """The series' zoom, from the same first frame as its scaling; fixed within the series."""
        t0 = time.perf_counter_ns()
        x = self.norm.to_model(item.raw)
        self.pitches, self.zoom = self._scaling_lib.series_zoom(x)
        self.up_order = self._scaling_lib.zoom_up_order(x) if self.pitches is not None else 3
        log.info("n2a-stream: series %.300s: %s (estimated in %.0f ms)", item.series.name,
                 "denoised at its own sampling" if self.pitches is None else
                 f"lattice pitch {self.pitches[0]:.2f} px zoomed x{self.zoom:.3f}"
                 + (" (up: linear, few counts)" if self.zoom > 1 and self.up_order == 1 else ""),
                 (time.perf_counter_ns() - t0) / 1e6)

    def process(self, item: InFrame) -> OutFrame | None:
        t0 = time.perf_counter_ns()
        queue_ns = time.time_ns() - item.t_enq_ns
        self._scale_for(item)
        seen: list[np.ndarray] = []  # the frame as the engine saw it (resampled or not)
        engine_ns = 0

        def infer(a: np.ndarray) -> np.ndarray:
            nonlocal engine_ns
            seen.append(a)
            t = time.perf_counter_ns()
            out = self.engine.infer(a[None])[0]
            engine_ns = time.perf_counter_ns() - t
            return out

        try:
            x = self.norm.to_model(item.raw)
            t1 = time.perf_counter_ns()
            y = self._denoise(x, infer)
            t2 = time.perf_counter_ns()
        except Exception as e:  # noqa: BLE001 - one frame must not stop the stream
            self._failed(item, "engine_error", repr(e))
            return None
        if not np.isfinite(y).all():
            n = int(y.size - np.count_nonzero(np.isfinite(y)))
            self._failed(item, "non_finite_output", f"{n} NaN/Inf values in the output")
            return None
        self.failures = 0
        t_lattice = time.perf_counter_ns()
        y, translations = self._lattice_averaged(item, y, x)
        t_lattice = time.perf_counter_ns() - t_lattice
        if self.delay_s:
            time.sleep(self.delay_s)
        t3 = time.perf_counter_ns()
        den = np.asarray(self.norm.from_model(y), dtype=np.float32)
        t4 = time.perf_counter_ns()
        if self.learner is not None:
            self._offer(item, seen[0])
        resample_ns = (t2 - t1) - engine_ns
        return OutFrame(item=item, denoised=den, scaling=self.norm, model_id=self.model_id,
                        resample=self.zoom,
                        lattice_average=translations,
                        timing={"queue": queue_ns, "normalise": (t1 - t0) + (t4 - t3),
                                "resample": resample_ns, "lattice": t_lattice,
                                "denoise": t3 - t1 - resample_ns - t_lattice})

    def _denoise(self, x: np.ndarray, infer: Any) -> np.ndarray:
        """One frame in model units through ``infer``, zoomed by the series' zoom and back."""
        return self._scaling_lib.denoise_at_series_zoom(x, self.pitches, infer, up_order=self.up_order)

    def _lattice_averaged(self, item: InFrame, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, int | None]:
        """``y`` averaged over the series' lattice translations (found in its first output), with
        the network's second pass on the lattice-averaged raw frame, and how many; ``(y, None)``
        when the step is off or failed on this frame (counted as ``lattice_skipped``: the frame
        goes out as the network made it)."""
        if not self.lattice_average:
            return y, None
        try:
            if self.offsets is None:
                self.offsets = self._lattice_lib.lattice_offsets(y)
                log.info("n2a-stream: series %.300s: lattice average over %d translations",
                         item.series.name, len(self.offsets))
            again = lambda a: self._denoise(a, lambda b: self.engine.infer(b[None])[0])  # noqa: E731
            return self._lattice_lib.lattice_average(y, x, self.offsets, denoise=again), len(self.offsets)
        except Exception as e:  # noqa: BLE001 - e.g. NaN raw pixels, or the second engine call failed
            self.stats.counts.add("lattice_skipped")
            self.rlog.warning("lattice", "n2a-stream: frame seq %d of %.300s sent without the lattice "
                              "average: %s", item.seq, item.series.name, e)
            return y, None

    def _offer(self, item: InFrame, x: np.ndarray) -> None:
        """Give the learner the frame as the model saw it, resampled like the series (a new
        series or settings: a new ring)."""
        meta = item.series.meta
        if meta is not self._learn_meta or self._learn_key is None or self._learn_key[0] != item.series.name:
            self._learn_meta = meta
            self._learn_key = (item.series.name, item.raw.shape, json.dumps(meta, sort_keys=True, default=str))
        self.learner.offer(self._learn_key, x, meta)

    def _maybe_swap(self) -> None:
        """Between two frames: take the learner's new engine, if one is ready."""
        swap = self.learner.take_swap() if self.learner is not None else None
        if swap is None:
            return
        old, self.engine, self.model_id = self.engine, swap.engine, swap.model_id
        self.stats.counts.add("model_swaps")
        log.info("n2a-stream: now denoising with model %s (%s)", swap.model_id, swap.reason)
        old.__exit__(None, None, None)

    def work(self) -> None:
        while not self.stop_event.is_set():
            item = self.inq.get(timeout=0.05)
            if item is None:
                if self.input_done.is_set():
                    break  # input stopped and the queue is empty
                continue
            if isinstance(item, EndMarker):
                if not self._put(item, marker=True):
                    return
                continue
            self._maybe_swap()
            out = self.process(item)
            if out is not None and not self._put(out):
                return
