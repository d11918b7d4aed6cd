"""The replay source behind ``n2a-replay`` (:mod:`streamer.replay_cli`): a detector / scan-system stand-in that publishes frames over protocol v1.

Frames come from a recorded file (the same readers as ``n2a-train``) or from the STEM series
simulator. The socket binds 127.0.0.1 by default; ``--port 0`` picks a free port, and the first line
on stdout is a JSON object naming the real endpoint, e.g.
``{"endpoint": "tcp://127.0.0.1:40123", "port": 40123, "pattern": "pub"}``, so scripts and tests
can read it. A PUB source is an XPUB socket underneath: it sees subscriptions, so
``--wait-subscribers N`` can hold the first frame until N subscribers have joined (a PUB socket
silently drops what it sends before anyone is connected). PUSH (``--pattern push``) blocks when the
receiver applies backpressure and loses nothing.

Examples
--------
Simulate a drifting nanoparticle at 10 frames/s until stopped::

    n2a-replay --simulate --size 256 --fps 10 --port 5555

Replay a file three times as fast as possible into a PULL receiver::

    n2a-replay --file series.tif --fps 0 --loop --count 300 --pattern push --port 5555
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import zmq

from .net import send_end
from .protocol import encode_end, encode_frame, encode_start, flat_meta
from .source import FrameSender, Pattern

__all__ = ["Replay", "simulated_source"]

log = logging.getLogger("n2a.replay")

FrameSource = Callable[[int], np.ndarray]


def simulated_source(*, shape: tuple[int, int] = (256, 256), scene: str = "nanoparticle",
                     peak_counts: float = 1.0, drift_px_per_frame: float = 0.05, seed: int = 0,
                     precompute: int = 0) -> tuple[FrameSource, dict[str, Any]]:
    """A frame function ``t -> uint16 frame`` from the STEM series simulator, and its ``meta``.

    With ``precompute > 0`` the first ``precompute`` frames are simulated up front and cycled (for
    benchmarks, where simulating a 1024² frame would cost more than sending it).
    """
    from noise2atom.stem_sim import StemSimulator

    sim = StemSimulator(shape=shape, scene=scene, peak_counts=peak_counts,
                        drift_px_per_frame=drift_px_per_frame, seed=seed)
    if precompute > 0:
        frames = [sim.frame(t).noisy for t in range(precompute)]
        return (lambda t: frames[t % len(frames)]), dict(sim.meta)
    return (lambda t: sim.frame(t).noisy), dict(sim.meta)


class Replay(FrameSender):
    """Publish frames at a fixed rate: ``start``, frames with increasing ``seq``, ``end``.

    Parameters
    ----------
    frames
        A sequence of (H, W) frames (or a (T, H, W) array), or a function ``t -> frame``.
    fps
        Frames per second; ``0`` sends as fast as the socket takes them.
    count
        Frames to send; ``None`` sends a sequence once (``loop``: forever) and a function forever.
    loop
        Wrap around at the end of a sequence.
    meta
        Acquisition settings, sent in ``start`` and with every frame.
    series
        Series name (default: ``replay-<time>``, unique per run so a restart starts a new series).
    pattern
        ``"pub"`` (XPUB underneath) or ``"push"``.
    host, port
        Where to bind (``port=0``: a free port; see :attr:`endpoint` after :meth:`bind`).
    address
        A full ZeroMQ address to bind instead of host/port.
    wait_subscribers, wait_timeout_s
        PUB only: hold the first frame until this many subscriptions arrived (or the timeout).
    curve_keys
        A :class:`streamer.security.CurveKeys`; the socket becomes a CURVE server.
    context
        ZeroMQ context to use (default: a private one, terminated by :meth:`close`).
    """

    NAME = "n2a-replay"
    # A short, bounded linger: what is still queued (the end) goes out to a connected
    # subscriber; with none connected a PUB has nothing queued and closes at once.
    CLOSE_LINGER_MS = 2000

    def __init__(self, *, frames: Sequence[np.ndarray] | np.ndarray | FrameSource, fps: float,
                 count: int | None = None, loop: bool = False, meta: dict[str, Any] | None = None,
                 series: str | None = None, pattern: Pattern = "pub", host: str = "127.0.0.1",
                 port: int = 0, address: str | None = None, wait_subscribers: int = 0,
                 wait_timeout_s: float = 30.0, curve_keys: Any = None,
                 context: zmq.Context | None = None) -> None:
        if pattern not in ("pub", "push"):
            raise ValueError(f"pattern must be 'pub' or 'push' (got {pattern!r})")
        if fps < 0:
            raise ValueError(f"fps must be >= 0 (got {fps})")
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0 (got {count})")
        if callable(frames):
            self._frame_at, self._n = frames, None
        else:
            if len(frames) == 0:
                raise ValueError("frames is empty (expected at least one frame)")
            self._frame_at, self._n = (lambda t: frames[t]), len(frames)
        super().__init__(pattern=pattern, address=address or f"tcp://{host}:{port}",
                         curve_keys=curve_keys, context=context)
        # Files carry nested metadata; the protocol takes a flat map within a size limit.
        self.fps, self.count, self.loop, self.meta = fps, count, loop, flat_meta(meta)
        self.series = series or f"replay-{time.time_ns()}"
        self.wait_subscribers, self.wait_timeout_s = wait_subscribers, wait_timeout_s
        self.sent = 0

    def _wait_for_subscribers(self) -> None:
        if self.pattern != "pub" or self.wait_subscribers <= 0:
            return
        deadline = time.monotonic() + self.wait_timeout_s
        while self.subscriptions < self.wait_subscribers and not self.stop_event.is_set():
            if time.monotonic() > deadline:
                log.warning("n2a-replay: %d of %d subscribers after %.1f s; sending anyway",
                            self.subscriptions, self.wait_subscribers, self.wait_timeout_s)
                return
            if self.socket.poll(50, zmq.POLLIN):
                self._drain_subscriptions()

    def run(self) -> int:
        """Send the series (blocking); returns the number of frames sent."""
        self.bind()
        self._wait_for_subscribers()
        total = self.count if self.count is not None else (
            None if (self._n is None or self.loop) else self._n)
        if not self._send(encode_start(self.series, meta=self.meta)):
            return self.sent
        t0 = time.monotonic()
        seq = 0
        while (total is None or seq < total) and not self.stop_event.is_set():
            if self.fps > 0:
                delay = t0 + seq / self.fps - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    break
            t = seq % self._n if self._n is not None else seq
            if self._n is not None and not self.loop and seq >= self._n:
                break
            frame = self._frame_at(t)
            parts = encode_frame(frame, seq=seq, series=self.series, t_acq_ns=time.time_ns(),
                                 meta=self.meta or None)
            if not self._send(parts):
                break
            seq += 1
            self.sent = seq
            self._drain_subscriptions()
        # The end marker goes out even after a stop: it is a single small message. 1 s was not
        # enough on a loaded machine: the end was lost, and `n2a-stream --exit-on-end` (the demo)
        # never ended.
        send_end(self.socket, encode_end(self.series, count=self.sent), pattern=self.pattern,
                 timeout_s=10.0, who="n2a-replay")
        return self.sent

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for the series to finish; raise ``TimeoutError`` after ``timeout`` seconds."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"n2a-replay still sending after {timeout} s "
                                   f"(sent {self.sent})")
        self.maybe_raise()

    def close(self, timeout: float = 5.0) -> None:
        """Stop sending; close the socket, letting what is queued (the end) go out within
        :attr:`CLOSE_LINGER_MS`, and the private context."""
        self._close(timeout)
