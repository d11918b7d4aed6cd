"""The viewer's network side: a thread that drains a ZeroMQ SUB socket into a one-slot buffer.

The thread owns its socket (ZeroMQ sockets are not thread-safe) and touches no Qt object. It decodes
every message with `streamer.protocol.decode`, keeps only the newest frame in a `LatestSlot`, and
records what the GUI needs to know in a small locked status record (counters, the last start/end,
arrival rate, latency). The GUI polls `take()` and `status()` from its own timer.

Slow-consumer policy: the receiver drains the socket as fast as messages arrive, so the publisher's
queue towards the viewer stays empty; if the GUI is slower than the stream, older frames are replaced
in the slot and counted as display skips. Nothing upstream waits for the viewer.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.auth
from zmq.utils import z85

from streamer import protocol
from viewer.slot import LatestSlot
from viewer.stats import LatencyWindow, RateMeter

__all__ = ["CurveClientKeys", "CurveKeyError", "FrameHeader", "ReceivedFrame", "ReceiverStatus", "FrameReceiver",
           "ReceiverError", "normalise_address"]


class ReceiverError(RuntimeError):
    """The receiver thread failed or did not stop in time."""


class CurveKeyError(ValueError):
    """A CURVE key directory is missing, incomplete or holds an unreadable key file."""


_Z85_KEY_LENGTH = 40  # a 32-byte CURVE key, Z85-encoded, as zmq.auth writes it


def _read_key_file(path: Path, *, need_secret: bool) -> tuple[bytes, bytes | None]:
    """Read one ``zmq.auth`` key file and check its keys look like Z85 CURVE keys."""
    what = "a zmq.auth key file with public-key and secret-key" if need_secret else \
        "a zmq.auth key file with a public-key"
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise CurveKeyError(f"--curve-keys: expected {what} in {path} (got {type(e).__name__}: {e})") from e
    if need_secret and secret is None:
        raise CurveKeyError(f"--curve-keys: expected {what} in {path} (got no secret-key)")
    for name, key in (("public-key", public), ("secret-key", secret)):
        if key is None:
            continue
        try:
            valid = len(key) == _Z85_KEY_LENGTH and len(z85.decode(key)) == 32
        except (KeyError, ValueError):  # z85.decode raises KeyError on a character outside Z85
            valid = False
        if not valid:
            raise CurveKeyError(f"--curve-keys: expected a {_Z85_KEY_LENGTH}-character Z85 {name} in {path} "
                                f"(got {len(key)} characters that are not a Z85 key)")
    return public, secret


@dataclasses.dataclass(frozen=True)
class CurveClientKeys:
    """What a CURVE client needs: its own key pair and the server's public key.

    The viewer link's keys of ``n2a-stream --make-keys DIR`` (see ``docs/protocol.md``):
    ``DIR/viewer`` (or ``DIR`` itself, when it holds them) with ``server.key`` (the stream's public
    key) and ``client.key_secret`` (the viewer's own key pair, whose public half must be in the
    stream's ``viewer/authorized_clients/``; mode 0600, else refused). Read with ``zmq.auth``
    directly: the viewer imports nothing from the streamer but its protocol.
    """

    directory: Path
    server_public: bytes
    client_public: bytes
    client_secret: bytes = dataclasses.field(repr=False)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CurveClientKeys:
        """Read ``server.key`` and ``client.key_secret`` from `directory`.

        Raises
        ------
        CurveKeyError
            A one-line message saying which file was expected and what was found instead.
        """
        d = Path(directory)
        if not zmq.has("curve"):
            raise CurveKeyError(f"--curve-keys {d}: expected a libzmq with CURVE support (got libzmq "
                                f"{zmq.zmq_version()} without it)")
        if not d.is_dir():
            got = "a file, not a directory" if d.exists() else "no such directory"
            raise CurveKeyError(f"--curve-keys {d}: expected a key directory made by n2a-stream --make-keys "
                                f"(got {got})")
        if (d / "viewer").is_dir():
            d = d / "viewer"  # the top of a --make-keys folder: the viewer link's keys
        missing = [name for name in ("server.key", "client.key_secret") if not (d / name).is_file()]
        if missing:
            try:
                got = f"{sorted(p.name for p in d.iterdir())}, missing {missing}"
            except OSError as e:
                got = f"an unreadable directory: {e}"
            raise CurveKeyError(f"--curve-keys {d}: expected server.key and client.key_secret "
                                f"(make them with n2a-stream --make-keys DIR) (got {got})")
        secret = d / "client.key_secret"
        mode = stat.S_IMODE(secret.stat().st_mode)
        if mode & 0o077:
            raise CurveKeyError(f"--curve-keys {d}: secret key {secret} is open to group or others "
                                f"(expected mode 0600, got {mode:04o}): chmod 600 {secret}")
        server_public, _ = _read_key_file(d / "server.key", need_secret=False)
        client_public, client_secret = _read_key_file(d / "client.key_secret", need_secret=True)
        return cls(directory=d, server_public=server_public, client_public=client_public,
                   client_secret=client_secret)

    def configure(self, socket: zmq.Socket) -> None:
        """Make `socket` a CURVE client of the server key (call before connect)."""
        socket.curve_secretkey = self.client_secret
        socket.curve_publickey = self.client_public
        socket.curve_serverkey = self.server_public


def normalise_address(source: str) -> str:
    """Turn ``HOST:PORT``, ``PORT`` or a full ZeroMQ endpoint into a ``tcp://`` endpoint.

    Examples
    --------
    >>> normalise_address("5556")
    'tcp://127.0.0.1:5556'
    >>> normalise_address("microscope-pc:5556")
    'tcp://microscope-pc:5556'
    >>> normalise_address("ipc:///tmp/n2a")
    'ipc:///tmp/n2a'
    """
    source = source.strip()
    if "://" in source:
        return source
    if source.isdigit():
        return f"tcp://127.0.0.1:{int(source)}"
    host, sep, port = source.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"source must be PORT, HOST:PORT or a ZeroMQ endpoint like tcp://HOST:PORT (got {source!r})")
    return f"tcp://{host}:{int(port)}"


@dataclasses.dataclass(frozen=True)
class FrameHeader:
    """The header of one received frame (kept for every frame, displayed or skipped)."""

    index: int
    series: str
    seq: int
    header: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ReceivedFrame:
    """One decoded output frame, as the GUI sees it.

    Attributes
    ----------
    index : int
        Position of the message in everything this receiver got (start/frame/end alike); lets the
        GUI order frames against start and end messages.
    series, seq : str, int
        The series name and the frame's sequence number.
    header : dict
        The full decoded header (css values, timing, engine, model, dropped, gaps, ...).
    raw, denoised : numpy.ndarray or None
        The payload parts, when the message carries them.
    t_recv_ns : int
        Wall-clock arrival time (``time.time_ns``), comparable with the header's ``t_acq_ns``.
    """

    index: int
    series: str
    seq: int
    header: dict[str, Any]
    raw: np.ndarray | None
    denoised: np.ndarray | None
    t_recv_ns: int


@dataclasses.dataclass(frozen=True)
class ReceiverStatus:
    """A consistent snapshot of the receiver's counters, taken under its lock."""

    address: str
    messages: int
    frames: int
    decode_errors: int
    last_decode_error: str | None
    last_frame_index: int
    last_start_index: int
    last_end_index: int
    last_end_series: str | None
    seconds_since_message: float | None
    fps_in: float
    latency_p50_ms: float
    latency_p99_ms: float
    display_skips: int
    headers_overflowed: int
    error: BaseException | None
    running: bool


def _frame_from_message(msg: Any, *, index: int, t_recv_ns: int) -> ReceivedFrame:
    arrays = dict(msg.arrays)
    raw = arrays.get("raw")
    denoised = arrays.get("denoised")
    if raw is None and denoised is None:
        raise protocol.ProtocolError(
            f"a frame for the viewer needs a 'raw' or 'denoised' part (got parts {sorted(arrays)})",
            reason="parts",
        )
    return ReceivedFrame(
        index=index,
        series=str(msg.series),
        seq=int(msg.seq),
        header=dict(msg.header),
        raw=raw,
        denoised=denoised,
        t_recv_ns=t_recv_ns,
    )


class FrameReceiver:
    """Subscribe to `address` on a background thread and keep the newest frame.

    Parameters
    ----------
    address : str
        ZeroMQ endpoint of ``n2a-stream``'s output, e.g. ``tcp://127.0.0.1:5556``.
    poll_ms : int
        Poll timeout; bounds how long `stop` waits for the thread to notice.
    latency_window_s : float
        Span of the latency percentiles and the arrival rate.
    rcvhwm : int
        Receive high-water mark (messages). Small on purpose: only the newest frame matters.
    history : int
        How many frame headers (for the CSS plot) are kept until the GUI takes them; older ones
        fall off (counted in `ReceiverStatus.headers_overflowed`).
    curve : CurveClientKeys, optional
        Connect as an authenticated CURVE client (for ``n2a-stream --curve-keys DIR``). Without the
        right keys the handshake never completes and no message arrives: the viewer keeps waiting.

    Examples
    --------
    >>> with FrameReceiver(address="tcp://127.0.0.1:1") as rx:
    ...     rx.take() is None
    True
    """

    def __init__(
        self,
        *,
        address: str,
        poll_ms: int = 50,
        latency_window_s: float = 5.0,
        rcvhwm: int = 16,
        history: int = 600,
        curve: CurveClientKeys | None = None,
    ) -> None:
        self.address = normalise_address(address)
        self.curve = curve
        self._poll_ms = int(poll_ms)
        self._rcvhwm = int(rcvhwm)
        self._slot: LatestSlot[ReceivedFrame] = LatestSlot()
        self._headers: collections.deque[FrameHeader] = collections.deque(maxlen=int(history))
        self._headers_overflowed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._context = zmq.Context()
        self._latency = LatencyWindow(window_s=latency_window_s)
        self._rate = RateMeter(window_s=min(latency_window_s, 2.0))
        self._messages = 0
        self._frames = 0
        self._decode_errors = 0
        self._last_decode_error: str | None = None
        self._last_frame_index = -1
        self._last_start_index = -1
        self._last_end_index = -1
        self._last_end_series: str | None = None
        self._last_message_t: float | None = None
        self._error: BaseException | None = None

    # -- owner side -------------------------------------------------------------------------

    def start(self, *, timeout: float = 5.0) -> FrameReceiver:
        """Start the thread and wait until its socket is connected."""
        if self._thread is not None:
            raise ReceiverError(f"receiver for {self.address} already started")
        self._thread = threading.Thread(target=self._run, name=f"n2a-view-rx {self.address}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.maybe_raise()
            raise ReceiverError(f"receiver socket for {self.address} not ready within {timeout} s")
        self.maybe_raise()
        return self

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the thread, close the socket and the context; raise if it does not stop in time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise ReceiverError(f"receiver thread for {self.address} did not stop within {timeout} s")
        self._context.term()

    def __enter__(self) -> FrameReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def maybe_raise(self) -> None:
        """Re-raise, in the caller's thread, an exception that ended the receiver thread."""
        with self._lock:
            err = self._error
        if err is not None:
            raise ReceiverError(f"receiver for {self.address} failed: {err!r}") from err

    def take(self) -> ReceivedFrame | None:
        """The newest frame not yet taken, or None."""
        return self._slot.take()

    def take_headers(self) -> list[FrameHeader]:
        """The headers of all frames received since the last call (at most `history`), oldest first."""
        with self._lock:
            headers = list(self._headers)
            self._headers.clear()
            return headers

    def status(self) -> ReceiverStatus:
        """A snapshot of the counters."""
        now = time.monotonic()
        with self._lock:
            p50, p99 = self._latency.percentiles_ms(now=now)
            return ReceiverStatus(
                address=self.address,
                messages=self._messages,
                frames=self._frames,
                decode_errors=self._decode_errors,
                last_decode_error=self._last_decode_error,
                last_frame_index=self._last_frame_index,
                last_start_index=self._last_start_index,
                last_end_index=self._last_end_index,
                last_end_series=self._last_end_series,
                seconds_since_message=None if self._last_message_t is None else now - self._last_message_t,
                fps_in=self._rate.rate(now=now),
                latency_p50_ms=p50,
                latency_p99_ms=p99,
                display_skips=self._slot.overwritten,
                headers_overflowed=self._headers_overflowed,
                error=self._error,
                running=self._thread is not None and self._thread.is_alive(),
            )

    # -- thread side ------------------------------------------------------------------------

    def _run(self) -> None:
        sock = None
        try:
            sock = self._context.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
            # Reconnect quickly when n2a-stream restarts; ZeroMQ does it by itself.
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            if self.curve is not None:
                self.curve.configure(sock)
            sock.connect(self.address)
            self._ready.set()
            while not self._stop.is_set():
                if not sock.poll(self._poll_ms, zmq.POLLIN):
                    continue
                # Drain what is queued, but look at the stop flag now and then.
                for _ in range(256):
                    try:
                        parts = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._handle(parts)
        except BaseException as e:  # reported to the owner through maybe_raise / status
            with self._lock:
                self._error = e
        finally:
            if sock is not None:
                sock.close(linger=0)
            self._ready.set()

    def _handle(self, parts: list[zmq.Frame]) -> None:
        t_recv_ns = time.time_ns()
        now = time.monotonic()
        with self._lock:
            index = self._messages
            self._messages += 1
            self._last_message_t = now
        try:
            msg = protocol.decode(parts)
            frame = _frame_from_message(msg, index=index, t_recv_ns=t_recv_ns) if msg.type == "frame" else None
        except Exception as e:  # a bad message must never stop the viewer: count and show it
            with self._lock:
                self._decode_errors += 1
                self._last_decode_error = f"{type(e).__name__}: {e}"
            return
        with self._lock:
            if msg.type == "start":
                self._last_start_index = index
            elif msg.type == "end":
                self._last_end_index = index
                self._last_end_series = str(msg.series)
            elif frame is not None:
                self._frames += 1
                self._last_frame_index = index
                self._rate.add(now)
                if len(self._headers) == self._headers.maxlen:
                    self._headers_overflowed += 1
                self._headers.append(FrameHeader(index=index, series=frame.series, seq=frame.seq,
                                                 header=frame.header))
                t_acq = frame.header.get("t_acq_ns")
                if isinstance(t_acq, int):
                    self._latency.add(t=now, latency_ns=t_recv_ns - t_acq)
        if frame is not None:
            self._slot.put(frame)
