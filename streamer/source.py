"""`FrameSender`: what every n2a publisher of raw frames shares (``n2a-replay``, ``n2a-watch``).

A source binds one PUB (XPUB underneath, so subscriptions are counted) or PUSH socket, sends
protocol v1 messages from a background :class:`~streamer.worker.Worker` (or the caller's thread
via ``run``), and reports the thread's error to its owner. Subclasses write ``run`` and name
themselves in :attr:`NAME` (used in messages).
"""
from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any, Literal

import zmq

from .net import bind_source, drain_subscriptions, send_waiting
from .worker import Worker

__all__ = ["FrameSender", "Pattern", "add_socket_arguments", "bind_and_announce", "socket_options"]

Pattern = Literal["pub", "push"]


class FrameSender:
    """The socket, thread and error handling of a publisher; see the module docstring."""

    NAME = "n2a-source"
    #: Milliseconds a closing socket may keep sending what is queued (the series' end).
    CLOSE_LINGER_MS = 0

    def __init__(self, *, pattern: Pattern, address: str, curve_keys: Any,
                 context: zmq.Context | None) -> None:
        if pattern not in ("pub", "push"):
            raise ValueError(f"pattern must be 'pub' or 'push' (got {pattern!r})")
        self.pattern, self.address, self.curve_keys = pattern, address, curve_keys
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._auth = None
        self.socket: zmq.Socket | None = None
        self.endpoint: str | None = None
        self.subscriptions = 0
        self.stop_event = threading.Event()
        self._thread: Worker | None = None

    def run(self) -> int:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    # -- socket ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`bind`)."""
        if self.endpoint is None:
            raise RuntimeError(f"{type(self).__name__}.port is known after bind() (got an unbound "
                               f"{self.NAME})")
        return int(self.endpoint.rsplit(":", 1)[1])

    def bind(self) -> str:
        """Create and bind the socket; return the real endpoint."""
        if self.socket is not None:
            return self.endpoint
        self.socket, self._auth, self.endpoint = bind_source(
            self.context, pattern=self.pattern, address=self.address, curve_keys=self.curve_keys,
            who=self.NAME)
        return self.endpoint

    def _drain_subscriptions(self) -> None:
        if self.pattern == "pub":
            self.subscriptions = max(0, self.subscriptions + drain_subscriptions(self.socket))

    def _send(self, parts: list[Any]) -> bool:
        """Send one message; PUSH waits for room, checking the stop flag. False when stopped."""
        return send_waiting(self.socket, parts, pattern=self.pattern, stop_event=self.stop_event)

    # -- thread use (tests, benchmarks) ---------------------------------------------------------
    def start(self) -> FrameSender:
        """Bind now and send from a background thread."""
        self.bind()
        self._thread = Worker(name=self.NAME, stop_event=self.stop_event, work=self.run)
        self._thread.start()
        return self

    @property
    def error(self) -> BaseException | None:
        """The background thread's error, if it failed."""
        return self._thread.error if self._thread is not None else None

    def maybe_raise(self) -> None:
        """Re-raise an error of the background thread in the caller."""
        if self._thread is not None:
            self._thread.maybe_raise()

    def _close(self, timeout: float) -> None:
        """Stop the thread, close the socket (:attr:`CLOSE_LINGER_MS`), the authenticator and a
        private context."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"{self.NAME} thread did not stop within {timeout} s")
        if self.socket is not None:
            self.socket.close(linger=self.CLOSE_LINGER_MS)
            self.socket = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context:
            self.context.term()

    def close(self, timeout: float = 5.0) -> None:
        """Stop sending and close (see :meth:`_close`)."""
        self._close(timeout)

    def __enter__(self) -> FrameSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_socket_arguments(parser: Any) -> None:
    """The socket options every source command line shares (``n2a-replay``, ``n2a-watch``)."""
    parser.add_argument("--pattern", choices=["pub", "push"], default="pub")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5555, help="port (0: a free one; default 5555)")
    parser.add_argument("--address", help="full ZeroMQ address to bind instead of host/port")
    parser.add_argument("--curve-keys", help="CURVE server socket with the acquisition keys: "
                        "DIR/acquisition (made by n2a-stream --make-keys DIR) or that folder itself")


def socket_options(args: Any, parser: Any) -> dict[str, Any]:
    """The :class:`FrameSender` keyword arguments of :func:`add_socket_arguments`' options; a bad
    port or key folder ends the program through ``parser.error`` with what was expected."""
    from .security import CurveKeyError, link_keys

    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535 (got {args.port})")
    keys = None
    if args.curve_keys:
        try:
            keys = link_keys(args.curve_keys, "acquisition")
        except CurveKeyError as e:
            parser.error(str(e))
    return dict(pattern=args.pattern, host=args.host, port=args.port, address=args.address,
                curve_keys=keys)


def bind_and_announce(sender: FrameSender, prog: str, **extra: Any) -> bool:
    """For a command line: bind ``sender``, print its endpoint as one JSON line (what scripts and
    tests read: endpoint, port, pattern, series, then ``extra``) and let SIGINT / SIGTERM stop it.
    False when it cannot bind: one line on stderr, the sender closed."""
    try:
        endpoint = sender.bind()
    except OSError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sender.close()
        return False
    print(json.dumps({"endpoint": endpoint, "port": sender.port, "pattern": sender.pattern,
                      "series": getattr(sender, "series", None), **extra}), flush=True)

    def on_signal(signum: int, _frame: Any) -> None:
        sender.stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return True
