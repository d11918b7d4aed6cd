"""Two file helpers every package uses: the sha256 of a file, and writing a file atomically.

`atomic_write` is the one way n2a puts a file in place (checkpoints, resume states, TIFF stacks,
ONNX exports, TensorRT plans): the bytes go to a temporary file in the target's folder, are flushed
to disk, and the temporary file is renamed over the target (``os.replace``, atomic on one file
system). A reader sees the old file or the whole new one, never half of one; a crash or an
exception leaves no temporary file behind.

>>> import pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write(d / "a.txt", lambda tmp: tmp.write_text("hello")).read_text()
'hello'
>>> file_sha256(d / "a.txt")[:16]
'2cf24dba5fb0a30e'
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_bytes", "file_sha256"]

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Make ``path`` by calling ``write(tmp)`` on a temporary file beside it, then renaming it.

    Parameters
    ----------
    path
        The file to create or replace; its folder is made if missing.
    write
        Writes the whole content to the path it is given (which exists, empty).

    Returns
    -------
    pathlib.Path
        ``path``. The file gets the permissions a plain ``open(path, "w")`` would give
        (``0666`` less the umask), not the ``0600`` of a temporary file.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename, so a crash cannot leave it empty
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
