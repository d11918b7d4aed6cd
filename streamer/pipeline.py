"""``Stream``: n2a's live path in one object — receive, denoise and publish threads joined by
bounded queues, with counted drops, rolling CSS, recording and a status line.

::

    input socket ─▶ Receiver ─▶ [in queue, policy] ─▶ Denoiser ─▶ [out queue] ─▶ Publisher ─▶ XPUB
    (SUB / PULL)    validate,        latest: drop            normalise, engine,     CSS, header,
                    gaps, record     oldest, count;          back to [0, 1]          send, record
                    raw              block: backpressure

The owner (the CLI, a test, the demo) calls :meth:`Stream.start`, then :meth:`Stream.maybe_raise`
regularly (a failed stage stops the stream and its error is raised there), and :meth:`Stream.stop`,
which stops input, lets the denoiser finish what is queued (within a deadline; anything left is
counted as ``dropped_at_stop``), flushes the recorder and returns the summary.

Examples
--------
>>> from streamer.pipeline import Stream, StreamConfig            # doctest: +SKIP
>>> with Stream(config=StreamConfig(source="tcp://127.0.0.1:5555")) as s:   # doctest: +SKIP
...     time.sleep(10); print(s.status_line())
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zmq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engines.config import EngineConfig

from .protocol import MAX_HEADER_BYTES
from .publisher import OutFrame, Publisher
from .queues import FrameQueue
from .stats import StreamStats
from .receive import EndMarker, InFrame, Receiver, SeriesState
from .denoise import Denoiser
from .learner import LearnConfig, Learner
from .net import subscriber_socket
from .worker import Worker

__all__ = ["Stream", "StreamConfig", "socket_hwm"]

log = logging.getLogger("n2a.stream")

#: Rejection reasons of frames that were received (counted in ``frames_in``) and then lost in a
#: later stage; with ``published`` and ``dropped`` they account for every frame received.
LOST_AFTER_INPUT = ("engine_error", "non_finite_output", "publish_error")
#: A high-water mark is never below this many messages, whatever the frame size.
MIN_HWM = 8
#: Room for a message's header next to its payload when sizing queues.
HEADER_ROOM = 4096


def socket_hwm(buffer_mb: float, frame_bytes: int, *, cap: int = 1000) -> int:
    """Messages one socket queue may hold: ``buffer_mb`` MiB of messages of ``frame_bytes``
    payload (plus :data:`HEADER_ROOM`), in ``[MIN_HWM, cap]``.

    Examples
    --------
    >>> socket_hwm(256, 64 << 20), socket_hwm(256, 1 << 20), socket_hwm(256, 1024)
    (8, 255, 1000)
    """
    n = buffer_mb * (1 << 20) // (max(0, frame_bytes) + HEADER_ROOM)
    return int(min(cap, max(MIN_HWM, n)))


class StreamConfig(BaseModel):
    """Options of ``n2a-stream`` (the CLI builds one from its arguments)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="ZeroMQ address of the acquisition publisher, e.g. "
                                    "tcp://127.0.0.1:5555")
    out: str = Field(default="tcp://127.0.0.1:0",
                     description="address to bind the output PUB socket (port 0: a free port)")
    pattern: Literal["sub", "pull"] = Field(default="sub", description="input socket type")
    policy: Literal["latest", "block"] = Field(
        default="latest", description="when the denoiser is behind: drop the oldest queued frame "
                                      "(counted) or apply backpressure (needs pattern pull)")
    with_raw: bool = Field(default=True, description="send the raw frame as a second part")
    model: Path | None = Field(default=None, description="checkpoint (default: the bundled one)")
    engine: EngineConfig = Field(
        default_factory=EngineConfig,
        description="the engine's settings (engines.EngineConfig, the same as n2a-denoise's and the "
                    "plan builder's); a back-end name alone, e.g. 'onnxruntime', is short for "
                    "EngineConfig(backend=...)")
    css_window: int = Field(default=10, ge=1, le=10_000, description="rolling CSS window")
    css: bool = Field(default=True, description="compute the rolling CSS of raw and denoised "
                                                "frames (off: the css fields are nil; saves two "
                                                "SSIMs per frame on a busy CPU)")
    resample: bool = Field(default=True, description="zoom each series so its atom columns' "
                           "estimated width is the one the model denoises best, and back "
                           "(noise2atom.scaling.series_zoom, estimated once per series; the "
                           "zoom goes into each output header as 'resample'); off: frames are "
                           "denoised at their own sampling")
    lattice_average: bool = Field(default=False, description="denoise each frame a second time from "
                                  "the raw frame averaged over its lattice's own translations, then "
                                  "average that output over them (noise2atom.lattice_average; found "
                                  "once per series; the count goes into each output header as "
                                  "'lattice_average'): closer to the truth on perfect crystals at low "
                                  "dose, at some cost to vacancies and edges at high dose and 3-3.5x "
                                  "the engine time on a CPU")
    max_queue: int = Field(default=4, ge=1, le=10_000,
                           description="frames waiting for the denoiser before the policy acts")
    record: Path | None = Field(default=None, description="recording directory")
    max_frame_bytes: int = Field(default=64 << 20, ge=1, description="larger frames are rejected")
    curve_keys: Path | None = Field(default=None, description="CURVE key directory with acquisition/ "
                                    "(input) and viewer/ (output) key sets (n2a-stream --make-keys)")
    denoise_delay_ms: float = Field(
        default=0.0, ge=0.0, le=60_000,
        description="diagnostic: sleep this long per frame in the denoise stage after the engine "
                    "ran (makes the engine 'slow' to exercise the drop policy)")
    buffer_mb: float = Field(
        default=256.0, gt=0, le=1 << 20,
        description="memory each socket queue may hold, in MiB: the high-water marks are this "
                    "divided by the size of the series' messages (by max_frame_bytes until the "
                    f"first frame), at least {MIN_HWM} and at most 1000 messages")
    rcvhwm: int | None = Field(default=None, ge=1, description="input socket receive high-water "
                               "mark in messages (default: from buffer_mb)")
    sndhwm: int | None = Field(default=None, ge=1, description="output socket send high-water "
                               "mark in messages, per viewer (default: from buffer_mb)")
    max_engine_failures: int = Field(
        default=50, ge=1, le=1_000_000,
        description="stop the stream when the engine fails on this many frames in a row")
    receive_delay_ms: float = Field(
        default=0.0, ge=0.0, le=60_000,
        description="diagnostic: sleep this long per message in the receive stage (makes it "
                    "'slow' to exercise the input high-water mark)")
    drain_timeout_s: float = Field(default=10.0, ge=0, description="how long stop() waits for "
                                   "queued frames to be denoised before counting them dropped")
    learn: LearnConfig | None = Field(default=None, description="learn while streaming: "
                                      "fine-tune the model on the series and swap it in (None: off)")

    @model_validator(mode="before")
    @classmethod
    def _device_into_engine(cls, data: Any) -> Any:
        # ``device=`` beside ``engine=`` (the older form) goes into the engine's settings.
        if isinstance(data, dict) and "device" in data:
            data = dict(data)
            device = data.pop("device")
            if device is not None:
                engine = data.get("engine", EngineConfig())
                engine = EngineConfig(backend=engine) if isinstance(engine, str) else engine
                data["engine"] = EngineConfig.of(engine, device=device)
        return data

    @field_validator("engine", mode="before")
    @classmethod
    def _backend_name(cls, value: Any) -> Any:
        return EngineConfig(backend=value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> StreamConfig:
        if self.policy == "block" and self.pattern != "pull":
            raise ValueError("policy 'block' needs pattern 'pull': a PUB publisher drops frames "
                             f"silently when pushed back (got pattern {self.pattern!r})")
        return self


class Stream:
    """The live path; see the module docstring.

    Parameters
    ----------
    config
        A :class:`StreamConfig`; or pass its fields as keyword arguments.
    """

    def __init__(self, *, config: StreamConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise TypeError(f"pass config= or options, not both (got both; options {sorted(options)})")
        self.config = config or StreamConfig(**options)
        self.stats = StreamStats()
        self.context: zmq.Context | None = None
        self.engine = None
        self.recorder = None
        self.learner: Learner | None = None
        self.learn_stop = threading.Event()
        self._auth = None
        self._in_sock = self._out_sock = self._monitor = None
        self._threads: list[Worker] = []
        self.stop_input = threading.Event()
        self.input_done = threading.Event()
        self.denoise_stop = threading.Event()
        self.publish_stop = threading.Event()
        self.out_endpoint: str | None = None
        self.engine_info: dict[str, Any] = {}
        self.model_id = ""
        self._t_start = 0.0
        self._t_stop: float | None = None
        self._started = self._stopped = False
        self._summary: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def out_port(self) -> int:
        if self.out_endpoint is None:
            raise RuntimeError("Stream.out_port is known after start() (got a stream not started)")
        return int(self.out_endpoint.rsplit(":", 1)[1])

    @property
    def subscriptions(self) -> int:
        """Subscriptions seen on the output socket (viewers that joined, minus those that left)."""
        return self.publisher.subscriptions if self._threads else 0

    @property
    def receiver(self) -> Receiver:
        return self._threads[0]

    @property
    def publisher(self) -> Publisher:
        return self._threads[2]

    def _open_engine(self) -> None:
        from engines import open_engine
        from noise2atom.checkpoint import default_model_path

        path = self.config.model or default_model_path()
        if not Path(path).is_file():
            raise FileNotFoundError(f"model checkpoint not found: {path} (expected a .safetensors "
                                    f"file made by n2a-train; pass --model PATH)")
        engine = open_engine(path, self.config.engine)
        self.engine = engine.__enter__()
        info = self.engine.describe()
        self.engine_info = dict(info)
        self.model_id = str(info.get("model", ""))
        self.engine_name = "/".join(str(info.get(k)) for k in ("backend", "device", "precision")
                                    if info.get(k) is not None)
        # The first inference pays for lazy set-up (memory arenas, kernels): pay it before frames
        # arrive rather than dropping the first frames of a series while it runs.
        self.engine.infer(np.zeros((1, 64, 64), np.float32))

    def start(self) -> Stream:
        """Open the engine, recorder and sockets, and start the three stages."""
        if self._started:
            raise RuntimeError("Stream.start() called twice (got a stream already started)")
        self._started = True
        try:
            self._open_engine()
            if self.config.learn is not None:
                self._make_learner()
            if self.config.record is not None:
                from .recorder import Recorder
                self.recorder = Recorder(self.config.record)
            self._open_sockets()
        except BaseException:
            self._close_resources()
            raise
        stages = self._make_stages()
        self._connect_input()  # last: a PUB source may start sending as soon as we subscribe
        self._threads = stages
        self._t_start = time.monotonic()
        for t in self._threads:
            t.start()
        if self.learner is not None:
            self.learner.start()
        return self

    def _open_sockets(self) -> None:
        """The context, the CURVE authenticator, the bound output and the (unconnected) input."""
        cfg = self.config
        self.context = zmq.Context()
        keys = in_keys = None
        if cfg.curve_keys is not None:  # one key set per link: see streamer.security
            from .security import link_keys, start_authenticator
            keys = link_keys(cfg.curve_keys, "viewer")
            in_keys = link_keys(cfg.curve_keys, "acquisition")
            self._auth = start_authenticator(self.context, keys)
        self._out_sock = self._bind_output(keys)
        self.out_endpoint = self._out_sock.getsockopt_string(zmq.LAST_ENDPOINT)
        sock = subscriber_socket(self.context, pattern=cfg.pattern, curve=in_keys,
                                 rcvhwm=cfg.rcvhwm or socket_hwm(cfg.buffer_mb,
                                                                 cfg.max_frame_bytes))
        # ZeroMQ refuses a larger part before it is in memory (and closes that connection; the
        # receiver counts it and connects again). The header part is far smaller.
        sock.maxmsgsize = max(cfg.max_frame_bytes, MAX_HEADER_BYTES) + MAX_HEADER_BYTES
        self._in_sock = sock
        self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)

    def _bind_output(self, keys: Any) -> zmq.Socket:
        """The output XPUB (a PUB that sees viewers subscribe), bound to ``config.out``."""
        cfg = self.config
        out = self.context.socket(zmq.XPUB)
        out.linger = 0
        # High-water marks in bytes, not messages: a sleeping viewer must not pin 1000 frames.
        # Until the first series says its frame size, assume the largest frame allowed.
        out.sndhwm = cfg.sndhwm or socket_hwm(cfg.buffer_mb, 2 * cfg.max_frame_bytes)
        out.setsockopt(zmq.XPUB_VERBOSE, 1)
        if keys is not None:
            keys.configure_server(out)
        self._out_sock = out  # closed by _close_resources if the bind fails
        try:
            out.bind(cfg.out)
        except zmq.ZMQError as e:
            raise OSError(f"n2a-stream cannot bind its output {cfg.out} (got {e})") from e
        return out

    def _make_stages(self) -> list[Worker]:
        """The receive, denoise and publish stages and the bounded queues between them."""
        cfg = self.config
        self.inq = FrameQueue(maxsize=cfg.max_queue, policy=cfg.policy,
                              is_droppable=lambda i: isinstance(i, InFrame))
        self.outq = FrameQueue(maxsize=cfg.max_queue, policy="block",
                               is_droppable=lambda i: isinstance(i, OutFrame))
        receiver = Receiver(socket=self._in_sock, queue=self.inq, stats=self.stats,
                            stop_event=self.stop_input, max_frame_bytes=cfg.max_frame_bytes,
                            model_meta=dict(getattr(self.engine.config, "meta", {}) or {}),
                            recorder=self.recorder, rcvhwm=self._in_sock.rcvhwm,
                            monitor=self._monitor, source=cfg.source,
                            delay_s=cfg.receive_delay_ms / 1000,
                            # Never re-sized while connected: raising a live PULL socket's
                            # high-water mark leaves a PUSH peer blocked at the old one for good
                            # (libzmq wakes a writer every hwm/2 reads, counted at the new hwm).
                            hwm_for=None)
        denoiser = Denoiser(engine=self.engine, inq=self.inq, outq=self.outq, stats=self.stats,
                            input_done=self.input_done, stop_event=self.denoise_stop,
                            delay_s=cfg.denoise_delay_ms / 1000,
                            max_failures=cfg.max_engine_failures, engine_name=self.engine_name,
                            model_id=self.model_id, learner=self.learner,
                            resample=cfg.resample, lattice_average=cfg.lattice_average)
        make_css, make_guard = self._measures()
        publisher = Publisher(socket=self._out_sock, queue=self.outq, stats=self.stats,
                              stop_event=self.publish_stop, make_css=make_css,
                              make_guard=make_guard, engine_name=self.engine_name,
                              model_id=self.model_id, with_raw=cfg.with_raw,
                              recorder=self.recorder,
                              hwm_for=None if cfg.sndhwm else self._hwm_for,
                              learner=self.learner)
        return [receiver, denoiser, publisher]

    def _hwm_for(self, message_bytes: int) -> int:
        return socket_hwm(self.config.buffer_mb, message_bytes)

    def _measures(self) -> tuple[Any, Any]:
        """The publisher's per-series factories: rolling CSS (None when off) and the guard."""
        # imported after the engine: keeps `import streamer` light
        from noise2atom.guard import FidelityGuard, TrainingRange
        from noise2atom.metrics import RollingCSS

        window, training = self.config.css_window, TrainingRange.from_config(self.engine.config)

        def make_css(scaling: Any) -> tuple[RollingCSS, RollingCSS]:
            return (RollingCSS(window, lo=0.0, hi=1.0),
                    RollingCSS(window, lo=scaling.lo, hi=scaling.hi))

        def make_guard(scaling: Any, dtype: Any) -> FidelityGuard:
            return FidelityGuard(scaling, dtype=dtype, reference=training)

        return (make_css if self.config.css else None), make_guard

    def _connect_input(self) -> None:
        try:
            self._in_sock.connect(self.config.source)
        except zmq.ZMQError as e:
            self._close_resources()
            raise ValueError(f"n2a-stream cannot connect to {self.config.source} (expected a "
                             f"ZeroMQ address like tcp://HOST:PORT; got {e})") from e

    def _make_learner(self) -> None:
        """The learner of ``--learn``: same back end and device as the stream's engine."""
        import tempfile

        from engines import open_engine
        from noise2atom.checkpoint import default_model_path

        def open_warm(path: Path) -> Any:
            engine = open_engine(path, self.config.engine).__enter__()
            try:
                engine.infer(np.zeros((1, 64, 64), np.float32))  # pay lazy set-up off the hot path
            except BaseException:
                engine.__exit__(None, None, None)
                raise
            return engine

        self._learn_dir = Path(tempfile.mkdtemp(prefix="n2a-learn-"))
        self.learner = Learner(checkpoint=Path(self.config.model or default_model_path()),
                               open_engine=open_warm, config=self.config.learn,
                               workdir=self._learn_dir, stop_event=self.learn_stop)
        self.learner.set_deployed_id(self.model_id)

    def _stop_learner(self, timeout: float) -> None:
        """Stop learning, write ``--learn-save``, close an engine that was never swapped in."""
        import shutil

        learner = self.learner
        self.learn_stop.set()
        if learner.is_alive():
            learner.join(timeout)
        if learner.is_alive():
            log.warning("n2a-stream: the learner did not stop within %.0f s", timeout)
            return
        pending = learner.take_swap()
        if pending is not None:
            pending.engine.__exit__(None, None, None)
        if self.config.learn.save is not None:
            try:
                saved = learner.save(self.config.learn.save)
                log.info("n2a-stream: adapted model written to %s", saved) if saved else log.info(
                    "n2a-stream: the learner never swapped: nothing written to %s",
                    self.config.learn.save)
            except OSError as e:
                log.error("n2a-stream: cannot write the adapted model to %s (%s)",
                          self.config.learn.save, e)
        shutil.rmtree(self._learn_dir, ignore_errors=True)

    def maybe_raise(self) -> None:
        """Raise the first stage error, if any (call this every tick)."""
        for t in self._threads:
            t.maybe_raise()

    @property
    def ended(self) -> bool:
        """An ``end`` message arrived and everything received has been published or dropped."""
        if not self._threads or not self.receiver.ended.is_set():
            return False
        c = self.stats.counts
        done = (c.get("published") + c.get("dropped")
                + sum(self.stats.rejected.get(r) for r in LOST_AFTER_INPUT))
        return done >= c.get("frames_in") and len(self.inq) == 0 and len(self.outq) == 0

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop taking input, finish (or count) what is in flight, flush, close; return the summary.

        Raises ``TimeoutError`` when a stage does not stop within ``timeout`` seconds, and the first
        stage error, if any, after everything was closed.
        """
        if self._stopped:
            return self._summary
        self._stopped = True
        deadline = time.monotonic() + timeout
        errors: list[BaseException] = []
        try:
            if self._threads:
                receiver, denoiser, publisher = self._threads
                self.stop_input.set()
                receiver.join_or_raise(max(0.1, deadline - time.monotonic()))
                self.input_done.set()
                # Let the denoiser finish what is queued, within the drain deadline.
                denoiser.join(min(self.config.drain_timeout_s, max(0.1, deadline - time.monotonic())))
                self.denoise_stop.set()
                denoiser.join_or_raise(max(0.1, deadline - time.monotonic()))
                left = [i for i in self.inq.drain() if isinstance(i, InFrame)]
                if left:
                    self.stats.counts.add("dropped_at_stop", len(left))
                self.publish_stop.set()
                publisher.join_or_raise(max(0.1, deadline - time.monotonic()))
                left = [i for i in self.outq.drain() if isinstance(i, OutFrame)]
                if left:
                    self.stats.counts.add("dropped_at_stop", len(left))
                self.engine = denoiser.engine  # the learner may have swapped it: close that one
            if self.learner is not None:
                self._stop_learner(max(1.0, deadline - time.monotonic()))
        except TimeoutError as e:
            errors.append(e)
            for ev in (self.stop_input, self.input_done, self.denoise_stop, self.publish_stop,
                       self.learn_stop):
                ev.set()
        self._t_stop = time.monotonic()
        if self.recorder is not None and not any(t.is_alive() for t in self._threads):
            self.recorder.close()  # flushed first, so the summary counts what reached the disk
        self._summary = self.summary()
        self._close_resources()
        for t in self._threads:
            if t.error is not None:
                errors.append(RuntimeError(f"{t.name} thread failed: {t.error!r}"))
        if errors:
            raise errors[0]
        return self._summary

    def _close_resources(self) -> None:
        alive = any(t.is_alive() for t in self._threads)
        if self._monitor is not None and not alive:
            self._in_sock.disable_monitor()
        for sock in (self._monitor, self._in_sock, self._out_sock):
            if sock is not None and not alive:
                sock.close(0)
        self._in_sock = self._out_sock = self._monitor = None
        if self.recorder is not None:
            self.recorder.close()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self.engine is not None:
            self.engine.__exit__(None, None, None)
            self.engine = None
        if self.context is not None and not alive:
            self.context.term()
            self.context = None

    def __enter__(self) -> Stream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ reporting
    def status(self) -> dict[str, Any]:
        """A snapshot of rates, latency, queue depth, drops and CSS."""
        st, c = self.stats, self.stats.counts
        last = st.get_last()
        return {
            "fps_in": st.rate_in.rate(), "fps_out": st.rate_out.rate(),
            "latency_p50_ms": st.latency.percentile_ms(50),
            "latency_p99_ms": st.latency.percentile_ms(99),
            "queue": len(self.inq) if self._threads else 0,
            "frames_in": c.get("frames_in"), "published": c.get("published"),
            "dropped": c.get("dropped") + c.get("dropped_input"), "gaps": c.get("gaps"),
            "rejected": st.rejected.total(),
            "css_mean": last.get("css_mean"), "css_raw_mean": last.get("css_raw_mean"),
            "meta_mismatch": last.get("meta_mismatch") or [],
            "flags": last.get("flags") or [],
            "resample": last.get("resample"),
            "lattice_average": last.get("lattice_average"),
        }

    def status_line(self) -> str:
        """The once-a-second line for stderr."""
        s = self.status()

        def f(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        line = (f"in {s['fps_in']:5.1f} fps | out {s['fps_out']:5.1f} fps | "
                f"latency p50 {f(s['latency_p50_ms'], '.1f')} ms p99 "
                f"{f(s['latency_p99_ms'], '.1f')} ms | queue {s['queue']} | "
                f"frames {s['published']}/{s['frames_in']} | dropped {s['dropped']} | "
                f"gaps {s['gaps']} | rejected {s['rejected']} | "
                f"CSS raw {f(s['css_raw_mean'], '.3f')} denoised {f(s['css_mean'], '.3f')}")
        if s["resample"] is not None and s["resample"] != 1.0:
            line += f" | resampled x{s['resample']:.2f}"
        if s["lattice_average"] is not None:
            line += (f" | lattice average x{s['lattice_average']}" if s["lattice_average"]
                     else " | lattice average: no lattice")
        if s["meta_mismatch"]:
            line += f" | META MISMATCH: {', '.join(s['meta_mismatch'])}"
        if s["flags"]:
            line += f" | FLAGS: {', '.join(s['flags'])}"
        if self.learner is not None:
            line += f" | {self._learn_text()}"
        return line

    def summary(self) -> dict[str, Any]:
        """Totals since start (the CLI prints it at exit)."""
        st, c = self.stats, self.stats.counts
        end = self._t_stop if self._t_stop is not None else time.monotonic()
        elapsed = max(1e-9, end - self._t_start) if self._t_start else 0.0
        stages = {k: w.mean_ms() for k, w in st.stages.items() if w.count}
        return {
            "frames_in": c.get("frames_in"), "published": c.get("published"),
            "dropped": c.get("dropped"), "dropped_at_stop": c.get("dropped_at_stop"),
            "dropped_input": c.get("dropped_input"), "gaps": c.get("gaps"), "rejected": st.rejected.total(),
            "rejected_by_reason": st.rejected.snapshot(), "series": c.get("series"),
            "elapsed_s": round(elapsed, 3),
            "fps_out": c.get("published") / elapsed if elapsed else 0.0,
            "latency_p50_ms": st.latency.percentile_ms(50),
            "latency_p99_ms": st.latency.percentile_ms(99),
            "stage_mean_ms": stages,
            "css_raw_mean": st.css_mean("css_raw"), "css_mean": st.css_mean("css"),
            "engine": self.engine_name if self.engine_info else None, "model": self.model_id,
            "recorded": self.recorder.counts() if self.recorder is not None else None,
            "not_recorded": self.recorder.not_recorded() if self.recorder is not None else None,
            "recording_error": self.recorder.error if self.recorder is not None else None,
            "flagged_frames": self.publisher.flag_counts.snapshot() if self._threads else {},
            "lattice_average": self._lattice_summary(),
            "learn": self._learn_summary(),
        }

    def _lattice_summary(self) -> dict[str, Any] | None:
        """With the lattice average on: the last series' translations and the frames sent without it."""
        if not self.config.lattice_average:
            return None
        return {"translations": self.stats.get_last().get("lattice_average"),
                "skipped": self.stats.counts.get("lattice_skipped")}

    def _learn_summary(self) -> dict[str, Any] | None:
        if self.learner is None:
            return None
        st = dict(self.learner.status(), model=self.model_now, last_error=self.learner.last_error)
        return st

    @property
    def model_now(self) -> str:
        """The id of the model denoising now (the learner swaps it)."""
        return self._threads[1].model_id if self._threads else self.model_id

    def _learn_text(self) -> str:
        st = self.learner.status()
        loss = "-" if st["heldout_loss"] is None else f"{st['heldout_loss']:.4g}"
        text = (f"learn {st['state']}: {st['iterations']} it, {st['swaps']} swaps, "
                f"held-out loss {loss}, ring {st['ring']}+{st['heldout']}")
        if st["errors"]:
            text += f", {st['errors']} errors"
        return text

    def summary_text(self, summary: dict[str, Any] | None = None) -> str:
        """The summary as a few human lines plus one JSON line (``n2a-stream summary: {...}``)."""
        s = summary or self.summary()

        def f(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        lines = [
            f"n2a-stream: {s['published']} of {s['frames_in']} frames denoised in "
            f"{s['elapsed_s']:.1f} s ({s['fps_out']:.1f} fps); dropped {s['dropped']} "
            f"(+{s['dropped_at_stop']} at stop, +{s['dropped_input']} at the input high-water "
            f"mark), upstream gaps {s['gaps']}, rejected "
            f"{s['rejected']} {s['rejected_by_reason'] or ''}".rstrip(),
            f"n2a-stream: latency p50 {f(s['latency_p50_ms'], '.1f')} ms, p99 "
            f"{f(s['latency_p99_ms'], '.1f')} ms; mean CSS raw {f(s['css_raw_mean'], '.3f')}, "
            f"denoised {f(s['css_mean'], '.3f')}; engine {s['engine']}, model {s['model']}",
            "n2a-stream summary: " + json.dumps(s, default=str),
        ]
        if s.get("recording_error"):
            lines.insert(2, f"n2a-stream: RECORDING STOPPED: {s['recording_error']}; recorded "
                            f"{s['recorded']}, not recorded {s['not_recorded']}")
        elif s.get("recorded") is not None:
            lines.insert(2, f"n2a-stream: recorded {s['recorded']}")
        if s.get("learn"):
            lr = s["learn"]
            lines.insert(2, f"n2a-stream: learner: {lr['swaps']} swaps ({lr['rollbacks']} rolled "
                            f"back), {lr['iterations']} iterations, last held-out loss "
                            f"{lr['heldout_loss']}, {lr['errors']} errors; last model {lr['model']}"
                            + (f"; last error: {lr['last_error']}" if lr.get("last_error") else ""))
        if s.get("lattice_average"):
            la = s["lattice_average"]
            lines.insert(2, f"n2a-stream: lattice average over {la['translations']} translations (last "
                            f"series); {la['skipped']} frames sent without it")
        if s.get("flagged_frames"):
            what = ", ".join(f"{k} on {n}/{s['published']} frames" for k, n in s["flagged_frames"].items())
            lines.insert(2, f"n2a-stream: warning: fidelity guard flags: {what}")
        return "\n".join(lines)
