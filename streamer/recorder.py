"""Lossless, crash-safe recording of the raw and denoised frames of a stream.

A recording is a directory holding two append-only streams of records, ``raw`` (every valid message
received, written in the receive path before the denoise queue, so a slow denoiser never costs a raw
frame) and ``denoised`` (every published output, without the duplicate raw part). Each stream is a
series of chunk files ``raw-00000.n2arec``, ``raw-00001.n2arec``, ... (a new chunk every
``chunk_bytes``). A record is one protocol message exactly as on the wire::

    b"N2R1" | u32 n_parts | n_parts x u64 part lengths | part bytes ... | u32 crc32(all of it)

(little-endian). The recorder flushes its buffer to the operating system every ``flush_every``
records and at least every ``flush_interval_s`` seconds, so after a ``SIGKILL`` everything up to the
last flush is on disk; a torn last record fails its length or CRC check and the reader stops there,
reporting it. The record lengths are the index: :func:`iter_records` walks them without parsing
payloads.

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

import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .protocol import Message, decode

__all__ = ["Recorder", "Recording", "RecordingError", "iter_records", "read_recording"]

MAGIC = b"N2R1"
SUFFIX = ".n2arec"
Kind = Literal["raw", "denoised"]
KINDS: tuple[Kind, ...] = ("raw", "denoised")
_MAX_PARTS = 16


class RecordingError(RuntimeError):
    """A recording directory cannot be written or read."""


def _part_bytes(p: Any) -> memoryview:
    buf = getattr(p, "buffer", None)
    view = memoryview(buf if buf is not None else p)
    return view.cast("B") if (view.ndim != 1 or view.itemsize != 1) else view


class _ChunkWriter:
    """One kind's append-only chunk files, guarded by a lock."""

    def __init__(self, directory: Path, kind: str, *, chunk_bytes: int, flush_every: int,
                 flush_interval_s: float) -> None:
        self.directory, self.kind = directory, kind
        self.chunk_bytes, self.flush_every, self.flush_interval_s = (
            chunk_bytes, flush_every, flush_interval_s)
        self.lock = threading.Lock()
        existing = sorted(directory.glob(f"{kind}-*{SUFFIX}"))
        # Appending to an existing recording starts a fresh chunk: never touch a possibly torn file.
        self.index = int(existing[-1].name[len(kind) + 1:-len(SUFFIX)]) + 1 if existing else 0
        self.file = None
        self.size = 0
        self.unflushed = 0
        self.last_flush = time.monotonic()
        self.records = 0
        self.bytes = 0

    def _open_next(self) -> None:
        if self.file is not None:
            self.file.close()
        path = self.directory / f"{self.kind}-{self.index:05d}{SUFFIX}"
        self.index += 1
        self.file = open(path, "ab", buffering=1 << 20)
        self.size = 0

    def write(self, parts: Sequence[Any]) -> None:
        views = [_part_bytes(p) for p in parts]
        head = MAGIC + struct.pack(f"<I{len(views)}Q", len(views), *(len(v) for v in views))
        crc = zlib.crc32(head)
        for v in views:
            crc = zlib.crc32(v, crc)
        n = len(head) + sum(len(v) for v in views) + 4
        with self.lock:
            if self.file is None or (self.size and self.size + n > self.chunk_bytes):
                self._open_next()
            self.file.write(head)
            for v in views:
                self.file.write(v)
            self.file.write(struct.pack("<I", crc))
            self.size += n
            self.bytes += n
            self.records += 1
            self.unflushed += 1
            now = time.monotonic()
            if self.unflushed >= self.flush_every or now - self.last_flush >= self.flush_interval_s:
                self.file.flush()
                self.unflushed, self.last_flush = 0, now

    def close(self, fsync: bool) -> None:
        with self.lock:
            if self.file is not None:
                self.file.flush()
                if fsync:
                    os.fsync(self.file.fileno())
                self.file.close()
                self.file = None


class Recorder:
    """Append protocol messages to a recording directory, thread-safely.

    Parameters
    ----------
    directory
        Created if missing. An existing recording is appended to (new chunk files).
    flush_every
        Hand the buffered records to the OS after this many records per kind.
    flush_interval_s
        ... or when this long has passed since the last flush (checked on each write).
    chunk_bytes
        Start a new chunk file when the current one would grow past this size.
    """

    def __init__(self, directory: str | os.PathLike, *, flush_every: int = 4,
                 flush_interval_s: float = 0.5, chunk_bytes: int = 1 << 30) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1 (got {flush_every})")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RecordingError(f"cannot create recording directory {self.directory} "
                                 f"(got {e})") from e
        self._writers = {k: _ChunkWriter(self.directory, k, chunk_bytes=chunk_bytes,
                                         flush_every=flush_every,
                                         flush_interval_s=flush_interval_s) for k in KINDS}
        self._closed = False

    def write(self, kind: Kind, parts: Sequence[Any]) -> None:
        """Append one message (the parts an ``encode_*`` function returned or a socket received)."""
        if self._closed:
            raise RecordingError(f"recorder for {self.directory} is closed (got a {kind} write)")
        if kind not in self._writers:
            raise RecordingError(f"kind must be one of {KINDS} (got {kind!r})")
        if not 1 <= len(parts) <= _MAX_PARTS:
            raise RecordingError(f"a record has 1..{_MAX_PARTS} parts (got {len(parts)})")
        self._writers[kind].write(parts)

    def counts(self) -> dict[str, int]:
        """Records written per kind."""
        return {k: w.records for k, w in self._writers.items()}

    def close(self, *, fsync: bool = True) -> None:
        """Flush and close every chunk file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for w in self._writers.values():
            w.close(fsync)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Recording:
    """A loaded recording: decoded messages per kind, and where a torn record cut a chunk short."""

    raw: list[Message] = field(default_factory=list)
    denoised: list[Message] = field(default_factory=list)
    truncated: dict[str, str] = field(default_factory=dict)

    def frames(self, kind: Kind = "raw") -> list[Message]:
        """Only the frame messages of one kind (no start/end markers)."""
        return [m for m in getattr(self, kind) if m.type == "frame"]


def iter_records(path: str | os.PathLike,
                 problems: dict[str, str] | None = None) -> Iterator[list[bytes]]:
    """Yield the parts of each complete record of one chunk file.

    Stops quietly at the first incomplete or corrupt record (what a crash leaves at the end of the
    last chunk) and, when ``problems`` is given, notes where and why under the file's name.
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        why = None
        if data[pos:pos + 4] != MAGIC:
            why = f"bad magic at byte {pos} (expected {MAGIC!r}, got {data[pos:pos + 4]!r})"
        elif pos + 8 > len(data):
            why = f"record header cut at byte {pos}"
        else:
            (n,) = struct.unpack_from("<I", data, pos + 4)
            if not 1 <= n <= _MAX_PARTS:
                why = f"bad part count at byte {pos} (expected 1..{_MAX_PARTS}, got {n})"
            elif pos + 8 + 8 * n > len(data):
                why = f"record header cut at byte {pos}"
            else:
                lengths = struct.unpack_from(f"<{n}Q", data, pos + 8)
                start = pos + 8 + 8 * n
                end = start + sum(lengths)
                if end + 4 > len(data):
                    why = f"record cut at byte {pos} (expected {end + 4 - pos} bytes, got " \
                          f"{len(data) - pos})"
                else:
                    (crc,) = struct.unpack_from("<I", data, end)
                    if zlib.crc32(data[pos:end]) != crc:
                        why = f"CRC mismatch in the record at byte {pos}"
        if why is not None:
            if problems is not None:
                problems[path.name] = why
            return
        parts, p = [], start
        for ln in lengths:
            parts.append(data[p:p + ln])
            p += ln
        yield parts
        pos = end + 4


def read_recording(directory: str | os.PathLike) -> Recording:
    """Load every complete record of a recording directory (chunks in order).

    Raises
    ------
    RecordingError
        When ``directory`` holds no recording.
    """
    directory = Path(directory)
    chunks = {k: sorted(directory.glob(f"{k}-*{SUFFIX}")) for k in KINDS}
    if not directory.is_dir() or not any(chunks.values()):
        raise RecordingError(f"{directory} holds no recording (expected {KINDS[0]}-*{SUFFIX} "
                             f"files; got {sorted(p.name for p in directory.glob('*'))[:5] if directory.is_dir() else 'no directory'})")
    rec = Recording()
    for kind, files in chunks.items():
        out = getattr(rec, kind)
        for path in files:
            for parts in iter_records(path, rec.truncated):
                out.append(decode(parts))
    return rec
