"""Streamer test fixtures: a lite checkpoint, ZeroMQ sockets that fail on leaks."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import zmq

# --import-mode=importlib puts no test folder on sys.path; the helpers module lives next to this file.
sys.path.insert(0, str(Path(__file__).parent))

from stream_testutils import make_lite_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def lite_model(tmp_path_factory) -> Path:
    """A random-init lite checkpoint (quick to run, independent of the bundled model)."""
    return make_lite_checkpoint(tmp_path_factory.mktemp("model") / "lite.safetensors")


class SocketFactory:
    """Makes sockets on one context and closes them all with linger 0."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.sockets: list[zmq.Socket] = []

    def make(self, kind: int) -> zmq.Socket:
        s = self.context.socket(kind)
        s.linger = 0
        self.sockets.append(s)
        return s

    def close(self) -> None:
        for s in self.sockets:
            s.close(0)
        t = threading.Thread(target=self.context.term, daemon=True)
        t.start()
        t.join(5)
        assert not t.is_alive(), "zmq context did not terminate within 5 s: a socket leaked"


@pytest.fixture
def zmq_ctx():
    """A socket factory whose sockets close with linger 0; context termination must end in 5 s."""
    factory = SocketFactory()
    yield factory
    factory.close()
