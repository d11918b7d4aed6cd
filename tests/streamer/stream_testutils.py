"""Helpers for the streamer tests: a lite checkpoint, a collecting subscriber, waits, subprocess env."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import zmq

from noise2atom.stem_sim import StemSimulator

SHAPE = (64, 64)


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

    def __init__(self, ctx, endpoint: str, *, curve=None) -> None:
        from streamer.protocol import decode

        self._decode = decode
        self.sock = ctx.make(zmq.SUB)
        if curve is not None:
            curve(self.sock)
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
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                             f"(got {len(self.frames)} frames, {len(self.messages)} messages)")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()


def wait_until(predicate, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
