"""``n2a-watch``: a folder watcher that publishes the frames an acquisition program saves, over
protocol v1 (its command line: :mod:`streamer.watch_cli`).

Gatan DigitalMicrograph, Thermo Fisher Velox / TIA and many scripts save each frame (or each short
stack) as a file. ``n2a-watch DIR`` polls the folder and publishes every complete file's frames to
``n2a-stream`` exactly as a scan system would. It is a *source*, like ``n2a-replay``, and not an
option of ``n2a-stream``: the denoising pipeline stays one (one receive path, one set of checks, drop
counts and series rules), and the watcher can run on the acquisition PC while ``n2a-stream`` runs on
the GPU machine.

Rules
-----
- Formats: ``.dm3 .dm4`` (Gatan), ``.emd`` (Velox), ``.ser`` (TIA), ``.tif .tiff``, ``.h5 .hdf5``
  (and ``.npy``), read by :func:`noise2atom.io.read_frames`; DM/EMD/SER need ``pip install n2a[io]``.
  Hidden files (``.name``) and other extensions are ignored, so a writer's temporary file that is
  renamed into place when done is picked up only under its final name.
- A file is *complete* when its size and modification time have not changed over ``stable_polls``
  polls and it reads without error. A stable file that does not read (yet) is retried on each poll;
  after ``reject_after_s`` of failures it is rejected, counted by reason and logged with the
  reader's "expected ... (got ...)" message. A file that changes after that is tried again.
- Order: files that become complete in the same poll are sent by modification time, then name
  (acquisition order); a stack's frames in their order. One series per watch session
  (``watch-<time>``), ``seq`` increasing across files; ``n2a-stream`` starts a new output series by
  itself when the frame shape or dtype changes.
- Never twice: a sent file is remembered by its identity (device + inode) with its size, mtime and
  frame count, so a rename after sending sends nothing. A file that grows after it was sent (a stack
  being appended to: more frames, the last one sent still in its place) sends only its new frames;
  a file rewritten in place is new content and is sent again. The memory is bounded (``max_remembered`` files, oldest forgotten first).
- A file renamed or deleted while it is read is counted as ``vanished`` and logged; a renamed one is
  picked up again under its new name.
- Meta: the file's acquisition settings as flat scalars (``pixel_size_nm``, ``dwell_time_us``,
  ``voltage_kV``, ``detector``, ...; nested vendor trees are left out), plus ``source`` (file name)
  and ``frame_index`` (within the file), with every frame.
- Nothing unbounded: the folder is polled with a stop event; files wait on disk, not in memory. With
  ``wait_subscribers`` (the command's default: 1) nothing is read while nobody listens, so nothing
  is published into the void.

The socket binds 127.0.0.1 by default; the first line on stdout is a JSON object naming the real
endpoint (as ``n2a-replay`` prints it), the last one a JSON summary. A status line goes to stderr
every ``--status-interval`` seconds. SIGINT/SIGTERM end it with exit status 0.

Examples
--------
Watch the folder DigitalMicrograph saves into; ``n2a-stream`` subscribes to port 5555::

    n2a-watch D:/session01 --port 5555
    n2a-stream --port 5555 --model my.safetensors
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zmq

from .net import send_end
from .protocol import ALLOWED_DTYPES, encode_end, encode_frame, encode_start
from .source import FrameSender, Pattern

__all__ = ["FolderWatcher", "WATCHED_EXTENSIONS", "flat_meta", "tiff_complete", "wire_frame"]

log = logging.getLogger("n2a.watch")

WATCHED_EXTENSIONS = (".dm3", ".dm4", ".emd", ".ser", ".tif", ".tiff", ".h5", ".hdf5", ".npy")
Reader = Callable[[Path], Any]  # path -> noise2atom.io.FrameStack

#: Longest string and list kept in a frame's ``meta`` (the protocol's meta is small settings).
_MAX_META_STR, _MAX_META_LIST = 200, 16


def flat_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The scalar and short-list entries of a reader's ``meta`` (nested vendor trees left out).

    Examples
    --------
    >>> flat_meta({"pixel_size_nm": 0.25, "detector": "HAADF", "metadata": {"General": {}},
    ...            "axes": [{"scale": 1}], "roi": [1, 2]})
    {'pixel_size_nm': 0.25, 'detector': 'HAADF', 'roi': [1, 2]}
    """
    def scalar(v: Any) -> bool:
        return (v is None or isinstance(v, (bool, int, float))
                or (isinstance(v, str) and len(v) <= _MAX_META_STR))

    return {str(k): v for k, v in meta.items()
            if scalar(v) or (isinstance(v, list) and len(v) <= _MAX_META_LIST
                             and all(scalar(x) for x in v))}


def wire_frame(frame: np.ndarray) -> np.ndarray:
    """A frame in a dtype protocol v1 carries: other floats -> float32, other ints -> int32/float32.

    Examples
    --------
    >>> wire_frame(np.zeros((2, 2), np.float64)).dtype.name, wire_frame(np.ones((2, 2), np.int8)).dtype.name
    ('float32', 'int16')
    """
    a = np.asarray(frame)
    if a.dtype.name in ALLOWED_DTYPES:
        return a
    if a.dtype == np.bool_ or a.dtype == np.int8:
        return a.astype(np.int16)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo >= 0 and hi <= np.iinfo(np.uint32).max:
            return a.astype(np.uint32)
        if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
            return a.astype(np.int32)
    return a.astype(np.float32)


def tiff_complete(path: str | os.PathLike[str]) -> bool:
    """Whether a TIFF's chain of image directories lies inside the file.

    A multi-page TIFF being written has its first pages complete before the last directories
    exist; the readers then return the first pages as if they were the whole stack. A file that is
    not a TIFF at all counts as complete here: the reader says what is wrong with it.

    Examples
    --------
    >>> import io, tempfile, tifffile
    >>> buf = io.BytesIO()
    >>> tifffile.imwrite(buf, np.zeros((3, 8, 8), np.uint16), metadata=None, photometric="minisblack")
    >>> p = Path(tempfile.mkdtemp()) / "t.tif"
    >>> _ = p.write_bytes(buf.getvalue()); tiff_complete(p)
    True
    >>> _ = p.write_bytes(buf.getvalue()[:-40]); tiff_complete(p)
    False
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 8:
            return True
        version = struct.unpack(order + "H", head[2:4])[0]
        if version == 42:
            count_fmt, entry, offset_fmt = "H", 12, "I"
            offset = struct.unpack(order + "I", head[4:8])[0]
        elif version == 43 and len(head) == 16:  # BigTIFF
            count_fmt, entry, offset_fmt = "Q", 20, "Q"
            offset = struct.unpack(order + "Q", head[8:16])[0]
        else:
            return True
        count_size, offset_size = struct.calcsize(count_fmt), struct.calcsize(offset_fmt)
        for _ in range(1_000_000):  # a bound against a looping chain
            if offset == 0:
                return True
            if offset + count_size > size:
                return False
            f.seek(offset)
            n = struct.unpack(order + count_fmt, f.read(count_size))[0]
            next_at = offset + count_size + n * entry
            if next_at + offset_size > size:
                return False
            f.seek(next_at)
            offset = struct.unpack(order + offset_fmt, f.read(offset_size))[0]
    return True


@dataclass
class _Pending:
    """A file seen in the folder but not sent yet."""

    size: int
    mtime_ns: int
    stable: int = 0  # polls with the same size and mtime
    failing_since: float | None = None  # monotonic time of the first failed read while stable
    last_error: str = ""
    rejected: bool = False


@dataclass
class _Sent:
    name: str
    size: int
    mtime_ns: int
    frames: int
    last_digest: bytes = b""  # of the last frame sent: tells an appended stack from a new file


def _digest(frame: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).digest()


class FolderWatcher(FrameSender):
    """Publish the frames of files saved into a folder, each complete file once, in order.

    Parameters
    ----------
    folder
        The folder the acquisition program saves into (not its sub-folders).
    existing
        ``"send"``: files already there are sent too (oldest first); ``"skip"``: only new files.
    poll_interval_s
        Seconds between two looks at the folder.
    stable_polls
        Polls a file's size and mtime must stay the same before it is read.
    reject_after_s
        How long a stable file may fail to read before it is rejected.
    max_remembered
        Sent files remembered (to never send one twice); the oldest are forgotten first.
    series
        Series name (default ``watch-<time>``).
    pattern, host, port, address, curve_keys, context
        The socket, as for :class:`streamer.replay.Replay`.
    wait_subscribers
        PUB only: read nothing while fewer subscribers than this are connected.
    reader
        ``path -> FrameStack`` (default :func:`noise2atom.io.read_frames`).
    """

    NAME = "n2a-watch"

    def __init__(self, folder: str | os.PathLike[str], *, existing: Literal["send", "skip"] = "send",
                 poll_interval_s: float = 0.25, stable_polls: int = 2,
                 reject_after_s: float = 5.0, max_remembered: int = 100_000,
                 series: str | None = None, pattern: Pattern = "pub", host: str = "127.0.0.1",
                 port: int = 0, address: str | None = None, wait_subscribers: int = 0,
                 curve_keys: Any = None, context: zmq.Context | None = None,
                 reader: Reader | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NotADirectoryError(f"n2a-watch needs an existing folder to watch "
                                     f"(got {str(self.folder)!r})")
        if existing not in ("send", "skip"):
            raise ValueError(f"existing must be 'send' or 'skip' (got {existing!r})")
        if pattern not in ("pub", "push"):
            raise ValueError(f"pattern must be 'pub' or 'push' (got {pattern!r})")
        if poll_interval_s <= 0 or stable_polls < 1 or reject_after_s < 0 or max_remembered < 1:
            raise ValueError(f"need poll_interval_s > 0, stable_polls >= 1, reject_after_s >= 0, "
                             f"max_remembered >= 1 (got {poll_interval_s}, {stable_polls}, "
                             f"{reject_after_s}, {max_remembered})")
        super().__init__(pattern=pattern, address=address or f"tcp://{host}:{port}",
                         curve_keys=curve_keys, context=context)
        if reader is None:
            from noise2atom.io import read_frames as reader
        self.reader = reader
        self.existing = existing
        self.poll_interval_s, self.stable_polls = poll_interval_s, stable_polls
        self.reject_after_s, self.max_remembered = reject_after_s, max_remembered
        self.series = series or f"watch-{time.time_ns()}"
        self.wait_subscribers = wait_subscribers
        self._pending: dict[str, _Pending] = {}
        self._sent: OrderedDict[tuple[int, int], _Sent] = OrderedDict()
        self.seq = 0
        self._started = False
        self.polls = 0
        self.files_seen = 0
        self.files_sent = 0
        self.incomplete_reads = 0  # reads of a stable file that failed and will be retried
        self.vanished = 0
        self.rejected: Counter[str] = Counter()
        self.rejections: list[str] = []  # the last few rejection messages (bounded)

    def _listening(self) -> bool:
        if self.pattern == "pub":
            self._drain_subscriptions()
            return self.subscriptions >= self.wait_subscribers
        return True

    # -- the folder -----------------------------------------------------------------------------
    def _scan(self) -> dict[str, os.stat_result]:
        found: dict[str, os.stat_result] = {}
        try:
            with os.scandir(self.folder) as it:
                for entry in it:
                    name = entry.name
                    if name.startswith(".") or not name.lower().endswith(WATCHED_EXTENSIONS):
                        continue
                    try:
                        if entry.is_file():
                            found[name] = entry.stat()
                    except FileNotFoundError:
                        continue  # gone between listing and stat
        except OSError as e:
            log.warning("n2a-watch: cannot list %s (got %s); trying again", self.folder, e)
        return found

    @staticmethod
    def _identity(st: os.stat_result, name: str) -> tuple[Any, ...]:
        # Some file systems report inode 0; the name then stands in for it.
        return (st.st_dev, st.st_ino) if st.st_ino else (st.st_dev, name)

    def _already_sent(self, name: str, st: os.stat_result) -> _Sent | None:
        """The record of this file's earlier send when it has content not sent yet, else skip.

        Returns the record (for a file that grew or was rewritten), ``None`` for a new file, and
        raises ``LookupError`` for a file whose content was sent already (under any name).
        """
        rec = self._sent.get(self._identity(st, name))
        if rec is None:
            return None
        if rec.size == st.st_size and rec.mtime_ns == st.st_mtime_ns:
            if rec.name != name:
                log.info("n2a-watch: %s is %s renamed after it was sent; not sent again",
                         name, rec.name)
                rec.name = name
            raise LookupError(name)
        if rec.name != name:
            return None  # a new file on a reused inode (the old one was deleted)
        return rec

    def poll(self) -> int:
        """Look at the folder once; send what became complete. Returns frames sent."""
        self.polls += 1
        listing = self._scan()
        for name in list(self._pending):
            if name not in listing:
                del self._pending[name]  # deleted or renamed before it was complete
        ready: list[tuple[int, str, os.stat_result]] = []
        for name, st in listing.items():
            p = self._pending.get(name)
            if p is None:
                try:
                    earlier = self._already_sent(name, st)
                except LookupError:
                    continue
                self._pending[name] = _Pending(st.st_size, st.st_mtime_ns)
                self.files_seen += earlier is None
                continue
            if (p.size, p.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._pending[name] = _Pending(st.st_size, st.st_mtime_ns)  # still being written
                continue
            p.stable += 1
            if p.stable >= self.stable_polls and not p.rejected:
                ready.append((st.st_mtime_ns, name, st))
        sent = 0
        if self._listening() and ready:
            for _, name, st in sorted(ready, key=lambda r: (r[0], r[1])):
                if self.stop_event.is_set():
                    break
                sent += self._take(name, st)
        return sent

    def _take(self, name: str, st: os.stat_result) -> int:
        """Read a stable file and send its frames (or what is new in it); 0 when it is not ready."""
        path = self.folder / name
        p = self._pending[name]
        try:
            earlier = self._already_sent(name, st)
        except LookupError:
            del self._pending[name]
            return 0
        try:
            if path.suffix.lower() in (".tif", ".tiff") and not tiff_complete(path):
                raise ValueError("a TIFF whose image directories run past the end of the file")
            stack = self.reader(path)
            after = os.stat(path)
        except Exception as e:  # each reader has its own errors; FrameReadError says what and why
            if not path.exists():
                self.vanished += 1
                del self._pending[name]
                log.warning("n2a-watch: %s was renamed or deleted while it was read; skipped "
                            "(got %s)", name, e)
                return 0
            return self._failed(name, p, f"{type(e).__name__}: {e}")
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._pending[name] = _Pending(after.st_size, after.st_mtime_ns)  # written meanwhile
            return 0
        frames = stack.frames
        first = 0
        if (earlier is not None and st.st_size > earlier.size and len(frames) > earlier.frames
                and _digest(frames[earlier.frames - 1]) == earlier.last_digest):
            first = earlier.frames  # a stack that was appended to: only its new frames
        meta = flat_meta(dict(stack.meta))
        meta["source"] = name
        if not self._started:  # sent once someone listens, so a PUB subscriber gets it too
            self._started = self._send(encode_start(self.series, meta=meta, source="n2a-watch",
                                                    folder=str(self.folder)))
        for i in range(first, len(frames)):
            frame = wire_frame(frames[i])
            parts = encode_frame(frame, seq=self.seq, series=self.series,
                                 t_acq_ns=time.time_ns(), meta={**meta, "frame_index": i})
            if not self._send(parts):
                return i - first
            self.seq += 1
        del self._pending[name]
        key = self._identity(st, name)
        self._sent[key] = _Sent(name, st.st_size, st.st_mtime_ns, len(frames),
                                _digest(frames[-1]))
        self._sent.move_to_end(key)
        while len(self._sent) > self.max_remembered:
            self._sent.popitem(last=False)
        self.files_sent += 1
        log.info("n2a-watch: sent %s: %d frame(s) %s %s", name, len(frames) - first,
                 frames.shape[1:], frames.dtype)
        return len(frames) - first

    def _failed(self, name: str, p: _Pending, why: str) -> int:
        now = time.monotonic()
        if p.failing_since is None:
            p.failing_since = now
        p.last_error = why
        if now - p.failing_since < self.reject_after_s:
            self.incomplete_reads += 1  # maybe still being written with pauses: try again
            return 0
        p.rejected = True  # until the file changes
        reason = "empty" if p.size == 0 else "unreadable"
        self.rejected[reason] += 1
        msg = (f"{name}: rejected ({reason}): expected a complete frame file readable as "
               f"{Path(name).suffix} after {self.reject_after_s:g} s of no change (got {why})")
        self.rejections = (self.rejections + [msg])[-20:]
        log.warning("n2a-watch: %s", msg)
        return 0

    # -- running --------------------------------------------------------------------------------
    def run(self) -> int:
        """Watch until :attr:`stop_event` is set (blocking); returns the number of frames sent."""
        self.bind()
        if self.existing == "skip":
            for name, st in self._scan().items():
                self._sent[self._identity(st, name)] = _Sent(name, st.st_size, st.st_mtime_ns, 0)
        while not self.stop_event.is_set():
            self.poll()
            self.stop_event.wait(self.poll_interval_s)
        if self._started:
            send_end(self.socket, encode_end(self.series, count=self.seq), pattern=self.pattern,
                     timeout_s=1.0, who="n2a-watch")
        return self.seq

    def summary(self) -> dict[str, Any]:
        """Counts so far: files seen/sent, frames sent, rejected by reason, vanished, pending."""
        return {"series": self.series, "files_seen": self.files_seen,
                "files_sent": self.files_sent, "frames_sent": self.seq,
                "rejected": dict(self.rejected), "vanished": self.vanished,
                "incomplete_reads": self.incomplete_reads, "pending": len(self._pending)}

    def status_line(self) -> str:
        s = self.summary()
        rej = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items())) or "0"
        wait = (" | waiting for a subscriber"
                if self.pattern == "pub" and self.subscriptions < self.wait_subscribers else "")
        return (f"n2a-watch: {s['files_seen']} files seen, {s['files_sent']} sent "
                f"({s['frames_sent']} frames), {s['pending']} pending, rejected {rej}, "
                f"vanished {s['vanished']}{wait}")

    def close(self, timeout: float = 5.0, *, raise_error: bool = True) -> None:
        """Stop watching, close the socket (linger 0) and the private context; then re-raise the
        thread's error (unless ``raise_error`` is false: the owner reported it already)."""
        self._close(timeout)
        if raise_error:
            self.maybe_raise()
