"""n2a's ZeroMQ plumbing, one copy for the streamer, the sources and the viewer.

- :func:`send_message` and :func:`drain_subscriptions`: the socket I/O next to the pure codec in
  :mod:`streamer.protocol` (zero-copy sends above :data:`~streamer.protocol.COPY_THRESHOLD`; the
  ownership rule is written down there).
- :func:`subscriber_socket`: the input side of a link (``n2a-stream``'s input, ``n2a-view``):
  linger 0, an explicit receive high-water mark, a quick reconnect when the publisher restarts,
  subscribed to everything, optionally a CURVE client.
- :func:`bind_source`, :func:`send_waiting` and :func:`send_end`: the output side of a frame source
  (``n2a-replay``, ``n2a-watch``): an XPUB (a PUB that sees subscriptions) or a PUSH socket.

The viewer imports this module: it needs ``zmq`` and :mod:`streamer.protocol` only.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import zmq

from .protocol import COPY_THRESHOLD

__all__ = ["bind_source", "drain_subscriptions", "send_end", "send_message", "send_waiting",
           "subscriber_socket"]

log = logging.getLogger("n2a.net")

#: Reconnect after 100 ms, backing off to 1 s, when the publisher restarts (ZeroMQ does it).
RECONNECT_IVL_MS, RECONNECT_IVL_MAX_MS = 100, 1000


def send_message(socket: zmq.Socket, parts: Sequence[Any], *,
                 copy_threshold: int = COPY_THRESHOLD, track: bool = False,
                 flags: int = 0) -> zmq.MessageTracker | None:
    """Send encoded parts on a ZeroMQ socket, zero-copy for payloads above ``copy_threshold``.

    Parameters
    ----------
    socket
        A ``zmq.Socket``.
    parts
        What an ``encode_*`` function of :mod:`streamer.protocol` returned.
    copy_threshold
        Payloads of at least this many bytes are sent with ``copy=False``.
    track
        Return a :class:`zmq.MessageTracker` for the zero-copy parts (wait on it before reusing a
        buffer). Without it, never write into a sent array again (n2a always sends fresh arrays).
    flags
        Extra send flags (e.g. ``zmq.NOBLOCK``).

    Returns
    -------
    zmq.MessageTracker or None
        The tracker of the last zero-copy part when ``track`` is set, else ``None``.
    """
    tracker = None
    last = len(parts) - 1
    for i, p in enumerate(parts):
        f = flags | (zmq.SNDMORE if i < last else 0)
        nbytes = p.nbytes if isinstance(p, np.ndarray) else len(p)
        if nbytes >= copy_threshold:
            t = socket.send(p, f, copy=False, track=track)
            if track:
                tracker = t
        else:
            socket.send(p, f, copy=True)
    return tracker


def drain_subscriptions(socket: zmq.Socket) -> int:
    """Read the pending (un)subscription messages of an XPUB socket without blocking.

    Returns the net change in subscribers: +1 per subscribe (first byte 1), -1 per unsubscribe
    (first byte 0). Our PUB sockets are XPUBs so sources and the stream know when a viewer joined.
    """
    change = 0
    while True:
        try:
            msg = socket.recv(zmq.NOBLOCK)
        except zmq.Again:
            return change
        if msg[:1] == b"\x01":
            change += 1
        elif msg[:1] == b"\x00":
            change -= 1


def subscriber_socket(context: zmq.Context, *, rcvhwm: int, pattern: Literal["sub", "pull"] = "sub",
                      curve: Any = None) -> zmq.Socket:
    """A SUB (subscribed to everything) or PULL socket, not yet connected.

    ``curve`` is a :class:`streamer.security.CurveKeys` to connect as a CURVE client with.
    """
    sock = context.socket(zmq.SUB if pattern == "sub" else zmq.PULL)
    sock.linger = 0
    sock.rcvhwm = rcvhwm
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    if pattern == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    if curve is not None:
        curve.configure_client(sock)
    return sock


def bind_source(context: zmq.Context, *, pattern: Literal["pub", "push"], address: str,
                curve_keys: Any = None, who: str,
                sndhwm: int = 1000) -> tuple[zmq.Socket, Any, str]:
    """Bind a frame source's socket: XPUB (sees subscriptions) or PUSH.

    Returns ``(socket, authenticator or None, endpoint)``; stop the authenticator before
    terminating the context. ``who`` names the program in the error (``OSError``) when the address
    cannot be bound.
    """
    sock = context.socket(zmq.XPUB if pattern == "pub" else zmq.PUSH)
    sock.linger = 0
    sock.sndhwm = sndhwm
    if pattern == "pub":
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
    auth = None
    try:
        if curve_keys is not None:
            from .security import start_authenticator
            curve_keys.configure_server(sock)
            auth = start_authenticator(context, curve_keys)
        sock.bind(address)
    except zmq.ZMQError as e:
        sock.close(0)
        if auth is not None:
            auth.stop()
        raise OSError(f"{who} cannot bind {address} (got {e})") from e
    return sock, auth, sock.getsockopt_string(zmq.LAST_ENDPOINT)


def send_waiting(socket: zmq.Socket, parts: Sequence[Any], *, pattern: Literal["pub", "push"],
                 stop_event: threading.Event) -> bool:
    """Send one message from a source; PUSH waits for room, checking ``stop_event``.

    A PUB socket never blocks (ZeroMQ drops at a subscriber's high-water mark). Returns False when
    stopped before the message went out.
    """
    while not stop_event.is_set():
        if pattern == "pub" or socket.poll(100, zmq.POLLOUT):
            try:
                send_message(socket, parts, flags=zmq.NOBLOCK)
                return True
            except zmq.Again:
                continue
    return False


def send_end(socket: zmq.Socket, parts: Sequence[Any], *, pattern: Literal["pub", "push"],
             timeout_s: float, who: str) -> bool:
    """Send a source's ``end`` message and wait until ZeroMQ has released it.

    It is sent zero-copy and tracked: once released, every frame before it has left our queue
    too, so closing with linger 0 right after loses neither. Returns False (and logs a warning)
    when it could not go out within ``timeout_s``.
    """
    if pattern == "push" and not socket.poll(500, zmq.POLLOUT):
        log.warning("%s: no room to send the end message", who)
        return False
    try:
        tracker = send_message(socket, parts, flags=zmq.NOBLOCK, copy_threshold=0, track=True)
        tracker.wait(timeout_s)
        return True
    except (zmq.Again, zmq.NotDone):
        log.warning("%s: the end message was not sent within %g s", who, timeout_s)
        return False
