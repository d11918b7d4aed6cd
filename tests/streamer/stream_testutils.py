"""Helpers for the streamer tests: a lite checkpoint, a collecting subscriber, waits, subprocess env.

Every wait here is on a condition with a generous deadline (PATIENCE): a loaded 2-core CI machine
can be 5-10x slower than a quiet one, and a deadline only matters when the test fails anyway.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from noise2atom.stem_sim import StemSimulator

SHAPE = (64, 64)
# Seconds to wait for something that normally takes well under a second.
PATIENCE = 60.0


def make_lite_checkpoint(path: Path, *, meta: dict | None = None) -> Path:
    """A random-init lite generator saved as an n2a checkpoint (normalisation from sim frames)."""
    import torch

    from noise2atom.checkpoint import ModelConfig, Normalisation, fingerprint_frames, save_checkpoint
    from noise2atom.models import build_generator

    torch.manual_seed(0)
    sim = StemSimulator(shape=SHAPE, seed=0)
    frames = np.stack([sim.frame(t).noisy for t in range(4)])
    config = ModelConfig(size="lite", method="blindspot",
                         normalisation=Normalisation.from_frames(frames),
                         data=fingerprint_frames([frames], sources=["simulate:test"],
                                                 meta=meta if meta is not None else sim.meta))
    return save_checkpoint(path, config, build_generator("lite").state_dict())


def cli_env() -> dict[str, str]:
    """Environment for the console scripts run as subprocesses (repo on the path, 1-2 threads)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def run_module(module: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


class Collector:
    """A SUB socket on a thread that collects decoded output messages (stop() to end)."""

    def __init__(self, ctx, endpoint: str, *, curve=None, monitor: bool = False) -> None:
        from streamer.protocol import decode

        self._decode = decode
        self.sock = ctx.make(zmq.SUB)
        if curve is not None:
            curve(self.sock)
        # The socket's connection events (handshake succeeded / failed), read by wait_for_event.
        self._monitor = self.sock.get_monitor_socket() if monitor else None
        self.events: list[int] = []
        self.sock.connect(endpoint)
        self.sock.subscribe(b"")
        self.messages = []
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50):
                try:
                    self.messages.append(self._decode(self.sock.recv_multipart(copy=False)))
                except Exception as e:  # noqa: BLE001 - collected and asserted on by the test
                    self.errors.append(e)

    @property
    def frames(self):
        return [m for m in list(self.messages) if m.type == "frame"]

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                             f"(got {len(self.frames)} frames, {len(self.messages)} messages)")

    def wait_for_event(self, events: set[int], timeout: float) -> int:
        """Wait for one of these zmq.EVENT_* on the socket (needs monitor=True); return it."""
        from zmq.utils.monitor import recv_monitor_message

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._monitor.poll(50):
                self.events.append(recv_monitor_message(self._monitor)["event"])
                if self.events[-1] in events:
                    return self.events[-1]
        raise AssertionError(f"timed out after {timeout} s waiting for a socket event in "
                             f"{sorted(events)} (got {self.events})")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()
        if self._monitor is not None:
            self.sock.disable_monitor()
            self._monitor.close(0)
            self._monitor = None


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def probe_until(send, arrived, timeout: float, what: str) -> None:
    """Call ``send()`` until ``arrived()``: beats the PUB/SUB slow joiner without guessing a delay.

    Each probe gets a short while to come through before the next is sent.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        send()
        settle = time.monotonic() + 0.2
        while time.monotonic() < settle:
            if arrived():
                return
            time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s probing until {what}")


def wait_for_subscriber(xpub: zmq.Socket, timeout: float = PATIENCE) -> None:
    """Block until a subscription reaches this XPUB socket (then what it sends is delivered).

    A PUB socket drops everything sent before the subscriber's subscription arrived; an XPUB sees
    that subscription, so this is the condition, not a sleep.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if xpub.poll(50) and xpub.recv()[:1] == b"\x01":
            return
    raise AssertionError(f"timed out after {timeout} s waiting for a subscriber to join")


class LineReader:
    """Reads a text stream (a subprocess's stderr) on a thread, so a test can wait on its lines."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, predicate, timeout: float, what: str) -> str:
        """The first line for which ``predicate(line)`` is true, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if predicate(line):
                    return line
            if not self._thread.is_alive() and all(not predicate(x) for x in self.lines):
                break
            time.sleep(0.02)
        raise AssertionError(f"no line with {what} within {timeout} s; got:\n{self.text}")

    def join(self, timeout: float) -> str:
        """Wait for the end of the stream (the process closed it); return everything read."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"stream still open after {timeout} s"
        return self.text


def push_series_through_stream(zmq_ctx, model, series: dict, **config):
    """Push each series (start, frames, end) into a real ``Stream`` (PUSH -> its PULL input,
    ``--policy block``, ONNX Runtime) and collect every output on a SUB socket.

    Returns ``(outputs by series name, status line, summary, summary text)``, the last three taken
    before the stream stops. ``zmq_ctx`` is the tests' socket factory (``.make(kind)``).
    """
    from streamer import net, protocol
    from streamer.pipeline import Stream

    push = zmq_ctx.make(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    stream = Stream(source=f"tcp://127.0.0.1:{port}", model=model, engine="onnxruntime",
                    pattern="pull", policy="block", **config).start()
    try:
        col = Collector(zmq_ctx, stream.out_endpoint)
        wait_until(lambda: stream.subscriptions >= 1, 10, "the test subscriber to join")
        total = 0
        for name, frames in series.items():
            net.send_message(push, protocol.encode_start(name))
            for seq, frame in enumerate(frames):
                net.send_message(push, protocol.encode_frame(frame, seq=seq, series=name,
                                                             t_acq_ns=time.time_ns()))
            net.send_message(push, protocol.encode_end(name, count=len(frames)))
            total += len(frames)
        col.wait_for(lambda: len(col.frames) >= total, 120, f"{total} denoised frames")
        stream.maybe_raise()
        status = stream.status_line()
        summary = stream.stop()
        text = stream.summary_text(summary)
    except BaseException:
        stream.stop()
        raise
    col.stop()
    assert not col.errors, col.errors
    by_series: dict[str, list] = {}
    for m in col.frames:
        by_series.setdefault(m.series, []).append(m)
    return by_series, status, summary, text
