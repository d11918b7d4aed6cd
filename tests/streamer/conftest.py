"""Streamer test fixtures: a lite checkpoint, ZeroMQ sockets that fail on leaks, helpers."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
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


@pytest.fixture(scope="session")
def lite_model(tmp_path_factory) -> Path:
    """The bundled model when it exists and is lite, else a random-init lite checkpoint."""
    return make_lite_checkpoint(tmp_path_factory.mktemp("model") / "lite.safetensors")


@pytest.fixture
def zmq_ctx():
    """A context whose sockets are closed with linger 0; termination must finish in 5 s."""
    ctx = zmq.Context()
    sockets: list[zmq.Socket] = []

    def socket(kind: int) -> zmq.Socket:
        s = ctx.socket(kind)
        s.linger = 0
        sockets.append(s)
        return s

    ctx.make = socket
    yield ctx
    for s in sockets:
        s.close(0)
    t = threading.Thread(target=ctx.term, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "zmq context did not terminate within 5 s: a socket leaked"


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
