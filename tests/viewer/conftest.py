"""Fixtures for the viewer tests: a real PUB socket on loopback, a receiver, a leak check."""
from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from PySide6 import QtCore, QtWidgets

from streamer import net, protocol
from viewer.receiver import FrameReceiver

# Seconds to wait for something that normally takes well under a second: a loaded 2-core CI
# machine can be 5-10x slower than a quiet one, and a deadline only matters when a test fails.
PATIENCE = 60.0


def _flush_deletes() -> None:
    # pyqtgraph gives its items parentless menus and dialogs; they go when the Python objects do.
    gc.collect()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    QtWidgets.QApplication.processEvents()


@pytest.fixture(autouse=True)
def no_leaked_widgets(qapp: QtWidgets.QApplication, request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves top-level widgets behind (set up before qtbot, so checked after it)."""
    _flush_deletes()
    before = set(map(id, qapp.topLevelWidgets()))
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        return
    _flush_deletes()
    leaked = [w for w in qapp.topLevelWidgets() if id(w) not in before]
    assert not leaked, f"top-level widgets left after {request.node.name}: {leaked}"


@pytest.fixture(autouse=True)
def patient_waits(qtbot, monkeypatch) -> None:
    """qtbot.waitUntil gives up after 5 s by default; a loaded CI machine may need longer.

    Only a failing test waits that long. Set up after `no_leaked_widgets`, so checked before it.
    """
    wait_until = qtbot.waitUntil
    monkeypatch.setattr(qtbot, "waitUntil",
                        lambda callback, *, timeout=int(PATIENCE * 1000): wait_until(callback, timeout=timeout))


def _term(ctx: zmq.Context, timeout: float = 5.0) -> None:
    t = threading.Thread(target=ctx.term, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise RuntimeError(f"zmq context did not terminate within {timeout} s (a socket was left open)")


class Publisher:
    """A real PUB socket on 127.0.0.1 that sends protocol v1 messages like n2a-stream's output."""

    def __init__(self, ctx: zmq.Context, port: int | None = None) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 10_000)
        try:
            if port is None:
                self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
            else:
                self._bind_retrying(port)
                self.port = port
        except BaseException:
            self.sock.close(linger=0)
            raise
        self.address = f"tcp://127.0.0.1:{self.port}"

    def _bind_retrying(self, port: int, timeout: float = 30.0) -> None:
        # A closed socket's port is released by ZeroMQ's I/O thread a moment later.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.bind(f"tcp://127.0.0.1:{port}")
                return
            except zmq.ZMQError as e:
                if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def send(self, parts: list) -> None:
        net.send_message(self.sock, parts)

    def start(self, series: str) -> None:
        self.send(protocol.encode_start(series))

    def end(self, series: str) -> None:
        self.send(protocol.encode_end(series))

    def frame(self, raw: np.ndarray, denoised: np.ndarray, *, seq: int, series: str, **fields) -> None:
        defaults = dict(css=None, css_raw=None, css_mean=None, timing={"engine": 1000}, engine="onnxruntime cpu fp32",
                        model="test-model", dropped=0, gaps=0)
        defaults.update(fields)
        self.send(protocol.encode_frame([denoised, raw], parts=["denoised", "raw"], seq=seq, series=series,
                                        t_acq_ns=time.time_ns(), **defaults))

    def close(self) -> None:
        if not self.sock.closed:
            self.sock.close(linger=0)


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    _term(ctx)


@pytest.fixture
def publisher_factory(zmq_context: zmq.Context) -> Iterator:
    """Make more publishers (e.g. a restarted n2a-stream on the same port); all closed at teardown."""
    made: list[Publisher] = []

    def make(port: int | None = None) -> Publisher:
        made.append(Publisher(zmq_context, port))
        return made[-1]

    yield make
    for pub in made:
        pub.close()


@pytest.fixture
def publisher(publisher_factory) -> Publisher:
    return publisher_factory()


@pytest.fixture
def receiver(publisher: Publisher) -> Iterator[FrameReceiver]:
    rx = FrameReceiver(address=publisher.address, poll_ms=20)
    with rx:
        yield rx


def _make_frame(i: int, shape: tuple[int, int] = (64, 80)) -> tuple[np.ndarray, np.ndarray]:
    """Frame i: a distinct raw uint16 image and a distinct float32 'denoised' image."""
    rng = np.random.default_rng(i)
    raw = rng.integers(0, 4000, size=shape, dtype=np.uint16)
    raw[0, 0] = i  # distinct even if the generator repeated
    denoised = rng.random(shape, dtype=np.float32)
    denoised[0, 0] = -float(i)
    return raw, denoised


def _subscribe(qtbot, publisher: Publisher, receiver: FrameReceiver, series: str = "s1") -> None:
    """Beat the PUB/SUB slow joiner: send `start` until the receiver has seen a new one."""
    before = receiver.status().last_start_index

    def seen() -> bool:
        publisher.start(series)
        return receiver.status().last_start_index > before
    deadline = time.monotonic() + PATIENCE
    while not seen():
        assert time.monotonic() < deadline, f"receiver never got a message from {publisher.address}"
        qtbot.wait(20)


@pytest.fixture
def make_frame():
    """`make_frame(i, shape=(64, 80)) -> (raw uint16, denoised float32)`, distinct per i."""
    return _make_frame


@pytest.fixture
def subscribe(qtbot):
    """`subscribe(publisher, receiver, series="s1")`: wait out the PUB/SUB slow joiner."""
    return lambda publisher, receiver, series="s1": _subscribe(qtbot, publisher, receiver, series)


ROOT = Path(__file__).resolve().parents[2]


def _run_viewer_screenshot(publisher, make_frame, args: list[str], timeout: float) -> tuple[int, str]:
    """Run ``python -m viewer.app ARGS`` (with --screenshot) while ``publisher`` feeds it frames.

    Returns the exit code and the combined output; the process is killed if it outlives ``timeout``.
    """
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "viewer.app", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        i = 0
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            raw, den = make_frame(i)
            publisher.frame(raw, den, seq=i, series="cli")
            i += 1
            time.sleep(0.05)
        out = proc.communicate(timeout=15)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out


@pytest.fixture
def run_viewer_screenshot(make_frame):
    """``run(publisher, args, timeout) -> (returncode, output)``: n2a-view fed by a real socket."""
    return lambda publisher, args, timeout: _run_viewer_screenshot(publisher, make_frame, args, timeout)


@pytest.fixture
def live_window(qtbot, tmp_path):
    """A real n2a-stream (ONNX Runtime, PULL input, backpressure) feeding a real viewer window.

    ``with live_window(**stream_options) as (window, send):`` -- ``send(frames, series)`` pushes
    the frames (seq 0, 1, ...) once the window's receiver has subscribed, and waits until the last
    one is shown. Skips when the bundled model is missing and no ``model=`` is given.
    """
    from noise2atom.checkpoint import default_model_path
    from streamer.pipeline import Stream
    from viewer.window import ViewerWindow

    @contextlib.contextmanager
    def open_window(**stream_options):
        if "model" not in stream_options and not default_model_path().is_file():
            pytest.skip(f"the bundled model is missing (expected {default_model_path()})")
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.linger = 0
        port = push.bind_to_random_port("tcp://127.0.0.1")
        stream = Stream(source=f"tcp://127.0.0.1:{port}", engine="onnxruntime", pattern="pull",
                        policy="block", **stream_options).start()

        def send(frames, series: str) -> None:
            qtbot.waitUntil(lambda: stream.subscriptions >= 1)
            for seq, frame in enumerate(frames):
                net.send_message(push, protocol.encode_frame(frame, seq=seq, series=series,
                                                             t_acq_ns=time.time_ns()))
            last = len(frames) - 1
            qtbot.waitUntil(lambda: window.current is not None and window.current.seq == last)

        try:
            with FrameReceiver(address=stream.out_endpoint, poll_ms=20) as rx:
                window = ViewerWindow(source=rx, refresh_ms=5, silence_timeout_s=30.0,
                                      snapshot_dir=tmp_path / "snaps")
                qtbot.addWidget(window)
                window.show()
                yield window, send
                window.close()
        finally:
            stream.stop()
            push.close(0)
            ctx.term()

    return open_window
