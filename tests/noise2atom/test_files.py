"""noise2atom.files: the one file hash and the one atomic write, on real files."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest

from noise2atom.files import atomic_write, atomic_write_bytes, file_sha256


def test_file_sha256_matches_hashlib_over_several_chunks(tmp_path):
    data = os.urandom((1 << 20) * 2 + 123)  # crosses the 1 MiB chunk boundary twice
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "x.bin"  # the folder is made
    assert atomic_write_bytes(path, b"first") == path
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.bin"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")

    def half_then_fail(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_doctests():
    import doctest

    import noise2atom.files

    result = doctest.testmod(noise2atom.files)
    assert result.attempted > 0 and result.failed == 0, result
