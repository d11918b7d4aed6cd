"""Lossless, crash-safe recording of the raw and denoised frames of a stream.

A recording is a directory holding two append-only streams of records, ``raw`` (every valid message
received, written in the receive path before the denoise queue, so a slow denoiser never costs a raw
frame) and ``denoised`` (every published output, without the duplicate raw part). Each stream is a
series of chunk files ``raw-00000.n2arec``, ``raw-00001.n2arec``, ... (a new chunk every
``chunk_bytes``). A record is one protocol message exactly as on the wire::

    b"N2R1" | u32 n_parts | n_parts x u64 part lengths | part bytes ... | u32 crc32(all of it)

(little-endian). Records are buffered and handed to the operating system every ``flush_every``
records, and a small timer thread owned by the recorder flushes anything older than
``flush_interval_s`` even when no further frame arrives, so after a ``SIGKILL`` everything up to the
last flush is on disk. The record lengths are the index: :func:`iter_records` walks them without
parsing payloads; a torn or corrupt record is skipped and reported, and reading goes on.

Recording never stops a stream: an ``OSError`` while writing (a full disk, a vanished mount) turns
recording off with one logged error naming the directory and the error; :meth:`Recorder.write` and
:meth:`Recorder.close` never raise it. :attr:`Recorder.error` says why recording stopped,
:meth:`Recorder.counts` what reached the disk and :meth:`Recorder.not_recorded` what was left out.

Examples
--------
>>> import tempfile, numpy as np
>>> from streamer.protocol import encode_frame
>>> d = tempfile.mkdtemp()
>>> with Recorder(d) as rec:
...     rec.write("raw", encode_frame(np.ones((2, 2), np.uint16), seq=0, series="s", t_acq_ns=0))
>>> r = read_recording(d)
>>> len(r.raw), r.raw[0].seq, r.truncated
(1, 0, {})
"""
from __future__ import annotations

import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .protocol import Message, ProtocolError, decode

__all__ = ["Recorder", "Recording", "RecordingError", "iter_records", "read_recording"]

log = logging.getLogger(__name__)

MAGIC = b"N2R1"
SUFFIX = ".n2arec"
Kind = Literal["raw", "denoised"]
KINDS: tuple[Kind, ...] = ("raw", "denoised")
_MAX_PARTS = 16
_MAX_BUFFER = 1 << 20  # flush at once when this many bytes are waiting


class RecordingError(RuntimeError):
    """A recording directory cannot be written or read."""


def _part_bytes(p: Any) -> memoryview:
    buf = getattr(p, "buffer", None)
    view = memoryview(buf if buf is not None else p)
    return view.cast("B") if (view.ndim != 1 or view.itemsize != 1) else view


def _chunks(directory: Path, kind: str) -> list[tuple[int, Path]]:
    """The chunk files of one kind, in order; other files (anything a person left there) are ignored."""
    pattern = re.compile(rf"{kind}-(\d+){re.escape(SUFFIX)}")
    found = []
    for p in directory.glob(f"{kind}-*{SUFFIX}"):
        m = pattern.fullmatch(p.name)
        if m is not None and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


class _ChunkWriter:
    """One kind's append-only chunk files and its write buffer, guarded by a lock.

    Only whole records that reached the operating system are counted in ``records``; an ``OSError``
    is passed to ``on_error`` (which turns the whole recorder off) and never raised.
    """

    def __init__(self, directory: Path, kind: str, *, chunk_bytes: int, flush_every: int,
                 flush_interval_s: float, recorder: Recorder) -> None:
        self.directory, self.kind, self.recorder = directory, kind, recorder
        self.chunk_bytes, self.flush_every, self.flush_interval_s = (
            chunk_bytes, flush_every, flush_interval_s)
        self.lock = threading.Lock()
        existing = _chunks(directory, kind)
        # Appending to an existing recording starts a fresh chunk: never touch a possibly torn file.
        self.index = existing[-1][0] + 1 if existing else 0
        self.file: Any = None
        self.size = 0              # bytes in the current chunk, buffered ones included
        # Records not yet handed to the OS: small ones copied, large ones as views of the caller's
        # parts (flushed before write() returns, so the caller's buffers are not held).
        self.buffer: list[Any] = []
        self.buffered = 0          # bytes in ``buffer``
        self.ends: list[int] = []  # where each buffered record ends, counted from the buffer start
        self.oldest = 0.0          # when the oldest buffered record was written
        self.records = 0           # records handed to the OS
        self.bytes = 0
        self.dropped = 0           # records not recorded because recording was off
        self.off = False

    def write(self, parts: Sequence[Any]) -> None:
        views = [_part_bytes(p) for p in parts]
        head = MAGIC + struct.pack(f"<I{len(views)}Q", len(views), *(len(v) for v in views))
        crc = zlib.crc32(head)
        for v in views:
            crc = zlib.crc32(v, crc)
        n = len(head) + sum(len(v) for v in views) + 4
        with self.lock:
            if self.off or self.recorder.error is not None:
                self._turn_off()
                self.dropped += 1
                return
            if self.size and self.size + n > self.chunk_bytes:
                self._flush()  # the buffer belongs to the current chunk
                if self.off:
                    self.dropped += 1
                    return
                self._close_file()
                self.size = 0
            if not self.buffer:
                self.oldest = time.monotonic()
            record = [head, *views, struct.pack("<I", crc)]
            if n < _MAX_BUFFER:
                self.buffer.append(b"".join(record))
            else:
                self.buffer.extend(record)
            self.buffered += n
            self.ends.append(self.buffered)
            self.size += n
            if len(self.ends) >= self.flush_every or self.buffered >= _MAX_BUFFER:
                self._flush()

    def flush_if_due(self, now: float) -> None:
        """The timer's check: flush records older than ``flush_interval_s``; close when turned off."""
        with self.lock:
            if self.recorder.error is not None:
                self._turn_off()
            elif self.buffer and now - self.oldest >= self.flush_interval_s:
                self._flush()

    def _write_buffer(self) -> tuple[int, OSError | None]:
        """Write the buffered records to the current chunk (opened if needed): (bytes written, error)."""
        written = 0
        try:
            if self.file is None:
                path = self.directory / f"{self.kind}-{self.index:05d}{SUFFIX}"
                self.index += 1
                self.file = open(path, "xb", buffering=0)
            for segment in self.buffer:
                view = memoryview(segment)
                while view:  # a raw write may take only part (a full disk takes what fits)
                    n = self.file.write(view)
                    written += n
                    view = view[n:]
        except OSError as e:
            return written, e
        return written, None

    def _flush(self) -> None:
        """Hand the buffer to the OS; count the whole records that made it (lock held)."""
        if not self.buffer or self.off:
            return
        written, error = self._write_buffer()
        self._count(written)
        if error is not None:
            self.recorder._fail(self.kind, error)
            self._turn_off()

    def _count(self, written: int) -> None:
        """Settle the buffer: records wholly written are recorded, the rest are not."""
        done = sum(1 for end in self.ends if end <= written)
        self.records += done
        self.bytes += self.ends[done - 1] if done else 0
        self.dropped += len(self.ends) - done
        self.buffer, self.buffered, self.ends = [], 0, []

    def _close_file(self, fsync: bool = False) -> None:
        if self.file is None:
            return
        f, self.file = self.file, None
        try:
            if fsync:
                os.fsync(f.fileno())
        except OSError as e:
            self.recorder._fail(self.kind, e)
        finally:
            try:
                f.close()
            except OSError as e:
                self.recorder._fail(self.kind, e)

    def _turn_off(self) -> None:
        """Recording stopped (here or in the other kind): give what is buffered one try, close."""
        if self.off:
            return
        self.off = True
        if self.buffer:
            self._count(self._write_buffer()[0])
        self._close_file()

    def close(self, fsync: bool) -> None:
        with self.lock:
            self._flush()
            self._close_file(fsync)
            self.off = True


class Recorder:
    """Append protocol messages to a recording directory, thread-safely.

    Parameters
    ----------
    directory
        Created if missing. An existing recording is appended to (new chunk files); files in it that
        are not chunk files are left alone.
    flush_every
        Hand the buffered records to the OS after this many records per kind.
    flush_interval_s
        ... and at the latest this long after a record was written (a timer thread checks, so the
        last records and the ``end`` of a series reach the disk without waiting for the next frame).
    chunk_bytes
        Start a new chunk file when the current one would grow past this size.

    Raises
    ------
    RecordingError
        When the directory cannot be created. Errors while recording never raise: see
        :attr:`error`.
    """

    def __init__(self, directory: str | os.PathLike, *, flush_every: int = 4,
                 flush_interval_s: float = 0.5, chunk_bytes: int = 1 << 30) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1 (got {flush_every})")
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0 (got {flush_interval_s})")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RecordingError(f"cannot create recording directory {self.directory} "
                                 f"(got {e})") from e
        self.error: str | None = None
        self._error_lock = threading.Lock()
        self._writers = {k: _ChunkWriter(self.directory, k, chunk_bytes=chunk_bytes,
                                         flush_every=flush_every,
                                         flush_interval_s=flush_interval_s, recorder=self)
                         for k in KINDS}
        self._closed = False
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._flush_loop, args=(flush_interval_s,),
                                       name="n2a-recorder-flush", daemon=True)
        self._timer.start()

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.wait(min(interval / 2, 0.25)):
            now = time.monotonic()
            for w in self._writers.values():
                w.flush_if_due(now)

    def _fail(self, kind: str, e: OSError) -> None:
        """Turn recording off: the first error is kept and logged once; the stream goes on."""
        with self._error_lock:
            if self.error is not None:
                return
            self.error = f"writing {kind} records to {self.directory} failed: {e}"
        log.error("n2a-stream: RECORDING STOPPED: %s; denoising goes on without recording", self.error)

    def write(self, kind: Kind, parts: Sequence[Any]) -> None:
        """Append one message (the parts an ``encode_*`` function returned or a socket received).

        A call after :meth:`close` or with a bad ``kind`` or part count is a programming error and
        raises :class:`RecordingError`; a failing disk never raises (see :attr:`error`).
        """
        if self._closed:
            raise RecordingError(f"recorder for {self.directory} is closed (got a {kind} write)")
        if kind not in self._writers:
            raise RecordingError(f"kind must be one of {KINDS} (got {kind!r})")
        if not 1 <= len(parts) <= _MAX_PARTS:
            raise RecordingError(f"a record has 1..{_MAX_PARTS} parts (got {len(parts)})")
        self._writers[kind].write(parts)

    def counts(self) -> dict[str, int]:
        """Records recorded per kind: handed to the OS, or buffered for the next flush.

        After :meth:`close`, or once recording was turned off, exactly those that reached the OS.
        """
        return {k: w.records + len(w.ends) for k, w in self._writers.items()}

    def not_recorded(self) -> dict[str, int]:
        """Records per kind lost because recording was turned off by an error."""
        return {k: w.dropped for k, w in self._writers.items()}

    def close(self, *, fsync: bool = True) -> None:
        """Stop the timer, flush and close every chunk file (idempotent; never raises OSError)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._timer.join(5)
        for w in self._writers.values():
            w.close(fsync)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Recording:
    """A loaded recording: decoded messages per kind, and the problems met while reading.

    ``truncated`` maps a chunk file's name to what was wrong in it (records skipped, a torn end);
    ``skipped`` counts the records (or stretches of bytes) that could not be read.
    """

    raw: list[Message] = field(default_factory=list)
    denoised: list[Message] = field(default_factory=list)
    truncated: dict[str, str] = field(default_factory=dict)
    skipped: int = 0

    def frames(self, kind: Kind = "raw") -> list[Message]:
        """Only the frame messages of one kind (no start/end markers)."""
        return [m for m in getattr(self, kind) if m.type == "frame"]


def _check_record(data: bytes, pos: int) -> tuple[str | None, tuple[int, ...], int]:
    """(why it is bad or None, part lengths, end of the payload) of the record at ``pos``."""
    if data[pos:pos + 4] != MAGIC:
        return f"bad magic at byte {pos} (expected {MAGIC!r}, got {data[pos:pos + 4]!r})", (), 0
    if pos + 8 > len(data):
        return f"record header cut at byte {pos}", (), 0
    (n,) = struct.unpack_from("<I", data, pos + 4)
    if not 1 <= n <= _MAX_PARTS:
        return f"bad part count at byte {pos} (expected 1..{_MAX_PARTS}, got {n})", (), 0
    if pos + 8 + 8 * n > len(data):
        return f"record header cut at byte {pos}", (), 0
    lengths = struct.unpack_from(f"<{n}Q", data, pos + 8)
    end = pos + 8 + 8 * n + sum(lengths)
    if end + 4 > len(data):
        return (f"record cut at byte {pos} (expected {end + 4 - pos} bytes, got "
                f"{len(data) - pos})"), (), 0
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[pos:end]) != crc:
        return f"CRC mismatch in the record at byte {pos}", (), 0
    return None, lengths, end


def _records(path: Path, bad: list[str]) -> Iterator[list[bytes]]:
    """The good records of one chunk file; each skip is appended to ``bad``."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        why, lengths, end = _check_record(data, pos)
        if why is not None:
            # Resume at the next record marker (a false one inside a payload fails its CRC in turn).
            nxt = data.find(MAGIC, pos + 1)
            bad.append(why if nxt < 0 else f"{why}, skipped {nxt - pos} bytes")
            if nxt < 0:
                return
            pos = nxt
            continue
        parts, p = [], pos + 8 + 8 * len(lengths)
        for ln in lengths:
            parts.append(data[p:p + ln])
            p += ln
        yield parts
        pos = end + 4


def iter_records(path: str | os.PathLike,
                 problems: dict[str, str] | None = None) -> Iterator[list[bytes]]:
    """Yield the parts of each good record of one chunk file.

    A bad record (a CRC mismatch, a bad header, a torn end as a crash leaves it) is skipped: reading
    resumes at the next record marker. When ``problems`` is given, the skips are noted there under
    the file's name.
    """
    path = Path(path)
    bad: list[str] = []
    try:
        yield from _records(path, bad)
    finally:
        if bad and problems is not None:
            problems[path.name] = "; ".join(bad)


def read_recording(directory: str | os.PathLike) -> Recording:
    """Load every good record of a recording directory (chunks in order).

    Bad records, records that are not valid protocol messages and unreadable chunk files are
    skipped and reported in :attr:`Recording.truncated` (per file) and :attr:`Recording.skipped`.

    Raises
    ------
    RecordingError
        When ``directory`` holds no recording.
    """
    directory = Path(directory)
    chunks = {k: _chunks(directory, k) if directory.is_dir() else [] for k in KINDS}
    if not any(chunks.values()):
        raise RecordingError(f"{directory} holds no recording (expected {KINDS[0]}-*{SUFFIX} "
                             f"files; got {sorted(p.name for p in directory.glob('*'))[:5] if directory.is_dir() else 'no directory'})")
    rec = Recording()
    for kind, files in chunks.items():
        out = getattr(rec, kind)
        for _, path in files:
            bad: list[str] = []
            try:
                for i, parts in enumerate(_records(path, bad)):
                    try:
                        out.append(decode(parts))
                    except ProtocolError as e:
                        bad.append(f"record {i} is not a valid message ({e})")
            except OSError as e:
                bad.append(f"cannot read it ({e})")
            if bad:
                rec.truncated[path.name] = "; ".join(bad)
                rec.skipped += len(bad)
    return rec
