"""The subscriber to ``n2a-stream``'s output: decodes each denoised frame on its own thread.

Each decoded :class:`streamer.protocol.Message` goes to ``on_frame`` on the receiver thread; the
Swift adaptor keeps only the newest per channel (a one-slot buffer) and shows it on the UI thread,
so a slow UI never backs up the socket. Messages that do not decode are counted by reason, never
raised.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from streamer.protocol import Message, ProtocolError, decode

__all__ = ["OutputReceiver"]


class OutputReceiver:
    """Subscribe to ``address`` (``n2a-stream``'s output, e.g. ``tcp://127.0.0.1:5556``).

    ZeroMQ reconnects by itself, so the receiver may start before ``n2a-stream`` does and keeps
    working across its restarts.
    """

    def __init__(self, *, address: str, on_frame: Callable[[Message], None],
                 context: zmq.Context | None = None) -> None:
        self.address = address
        self._on_frame = on_frame
        self._context = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.received = 0
        self.rejected: dict[str, int] = {}
        self.last_error: str | None = None
        self.last_header: dict[str, Any] | None = None
        self.last_time: float | None = None

    def start(self) -> OutputReceiver:
        sock = self._context.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 8  # the newest frames matter; older ones are dropped by ZeroMQ, not queued
        sock.subscribe(b"")
        sock.connect(self.address)  # errors (a bad address) are raised here, to the caller
        self._thread = threading.Thread(target=self._run, args=(sock,), name="n2a-live-receiver",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self, sock: zmq.Socket) -> None:
        try:
            while not self._stop.is_set():
                if not sock.poll(50):
                    continue
                parts = sock.recv_multipart(copy=False)
                try:
                    msg = decode(parts)
                except ProtocolError as e:
                    self.rejected[e.reason] = self.rejected.get(e.reason, 0) + 1
                    self.last_error = str(e)
                    continue
                if msg.type != "frame":
                    continue
                self.received += 1
                self.last_header, self.last_time = msg.header, time.monotonic()
                self._on_frame(msg)
        except BaseException as e:  # noqa: BLE001 - reported to the owner by maybe_raise()
            self._error = e
        finally:
            sock.close(0)

    @property
    def error(self) -> BaseException | None:
        """The error the worker thread stopped on (None while it runs or stopped cleanly)."""
        return self._error

    def maybe_raise(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"n2a live receiver stopped: {self._error}") from self._error

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"n2a live receiver did not stop within {timeout} s")
