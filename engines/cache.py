"""The n2a cache folder and its files (ONNX exports, TensorRT plans, timing caches), hash-checked.

Every cache file gets a sidecar ``<file>.sha256`` (``sha256sum`` format) with the hash of the
bytes as they were written, put in place before the file itself is renamed into place
(`noise2atom.files.atomic_write` for both). A cached file is used only when its bytes match that
recorded hash (:func:`cache_problem`, :func:`read_cached`), never on the strength of a hash it
declares itself; a corrupt or tampered file, or one without a sidecar, is rebuilt with a warning.
A crash between the two renames leaves a sidecar that does not match: the file is rebuilt.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from noise2atom.files import atomic_write, atomic_write_bytes, file_sha256

from .base import EngineBuildError

__all__ = ["cache_dir", "cache_problem", "read_cached", "sidecar_path", "write_cached", "write_cached_with"]


def cache_dir() -> Path:
    """The n2a cache folder: ``$N2A_CACHE`` or ``~/.cache/n2a``."""
    return Path(os.environ.get("N2A_CACHE") or Path.home() / ".cache" / "n2a")


def sidecar_path(path: str | Path) -> Path:
    """Where the recorded content hash of a cache file lives: ``<file>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _recorded_sha(path: Path) -> tuple[str | None, str | None]:
    """(the hash recorded for ``path``, or None and why not)."""
    side = sidecar_path(path)
    try:
        text = side.read_text(encoding="ascii")
    except FileNotFoundError:
        return None, f"has no recorded hash (expected {side.name})"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"has an unreadable recorded hash {side.name} ({e})"
    sha = text.split(" ", 1)[0].strip()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        return None, f"has a malformed recorded hash in {side.name} (got {text[:80]!r})"
    return sha, None


def _mismatch(recorded: str, got: str) -> str:
    return (f"does not match the hash recorded when it was built (expected sha256 {recorded[:16]}…, "
            f"got {got[:16]}…): corrupt or changed since")


def cache_problem(path: str | Path) -> str | None:
    """Why the cache file ``path`` must not be used (``None``: its bytes match the recorded hash)."""
    path = Path(path)
    sha, why = _recorded_sha(path)
    if why is not None:
        return why
    got = file_sha256(path)
    return None if got == sha else _mismatch(sha, got)


def read_cached(path: str | Path) -> bytes:
    """The bytes of a cache file, checked against its recorded hash (one read: what is checked is
    what is returned).

    Raises
    ------
    EngineBuildError
        When the file has no recorded hash or its bytes do not match it.
    """
    path = Path(path)
    sha, why = _recorded_sha(path)
    data = path.read_bytes()
    if why is None:
        got = hashlib.sha256(data).hexdigest()
        why = None if got == sha else _mismatch(sha, got)
    if why is not None:
        raise EngineBuildError(f"cache file {path} {why}")
    return data


def write_cached_with(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Make a cache file with ``write(tmp)`` and record its hash, atomically (sidecar first)."""
    path = Path(path)

    def write_and_record(tmp: Path) -> None:
        write(tmp)
        atomic_write_bytes(sidecar_path(path), f"{file_sha256(tmp)}  {path.name}\n".encode("ascii"))

    return atomic_write(path, write_and_record)


def write_cached(path: str | Path, data: bytes) -> Path:
    """Write a cache file and its recorded hash, atomically (a crash never leaves half a file)."""
    return write_cached_with(path, lambda tmp: tmp.write_bytes(data))
