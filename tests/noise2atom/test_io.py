"""Frame readers and the TIFF writer, on real files."""
from __future__ import annotations

import importlib.util
import json
import os

import h5py
import numpy as np
import pytest
import tifffile

from noise2atom.io import FrameReadError, read_frames, write_stack


@pytest.fixture
def stack():
    return np.random.default_rng(0).integers(0, 4000, (3, 12, 10)).astype(np.uint16)


def test_tiff_stack_single_image_and_meta(tmp_path, stack):
    p = tmp_path / "s.tif"
    tifffile.imwrite(p, stack, description=json.dumps({"pixel_size_nm": 0.021, "detector": "HAADF"}),
                     metadata=None, photometric="minisblack")
    st = read_frames(p)
    np.testing.assert_array_equal(st.frames, stack)
    assert st.frames.dtype == np.uint16
    assert st.meta == {"pixel_size_nm": 0.021, "detector": "HAADF"}
    assert st.source == str(p)
    one = tmp_path / "one.tiff"
    tifffile.imwrite(one, stack[0], resolution=(1e7 / 0.05, 1e7 / 0.05), resolutionunit="CENTIMETER")
    st1 = read_frames(str(one))
    assert st1.frames.shape == (1, 12, 10)
    assert st1.meta["pixel_size_nm"] == pytest.approx(0.05)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, stack[0], description="free text", metadata=None)
    assert read_frames(plain).meta == {"description": "free text"}


def test_npy(tmp_path, stack):
    p = tmp_path / "s.npy"
    np.save(p, stack.astype(np.float32))
    st = read_frames(p)
    np.testing.assert_array_equal(st.frames, stack.astype(np.float32))
    np.save(tmp_path / "one.npy", stack[0])
    assert read_frames(tmp_path / "one.npy").frames.shape == (1, 12, 10)


def test_hdf5_first_dataset_named_dataset_and_attrs(tmp_path, stack):
    p = tmp_path / "s.h5"
    with h5py.File(p, "w") as f:
        f["info/vector"] = np.arange(5)  # 1-D: skipped by auto-pick
        g = f.create_group("scan")
        ds = g.create_dataset("frames", data=stack)
        ds.attrs["pixel_size_nm"] = 0.03
        ds.attrs["detector"] = b"HAADF"
        ds.attrs["shape_hint"] = np.array([3, 12, 10])
        f["scan/other"] = stack[:1] * 2
    st = read_frames(p)
    np.testing.assert_array_equal(st.frames, stack)
    assert st.meta == {"pixel_size_nm": 0.03, "detector": "HAADF", "shape_hint": [3, 12, 10]}
    assert st.source == f"{p}:/scan/frames"
    np.testing.assert_array_equal(read_frames(f"{p}:/scan/other").frames, stack[:1] * 2)
    np.testing.assert_array_equal(read_frames(p, dataset="/scan/other").frames, stack[:1] * 2)
    with pytest.raises(FrameReadError, match=r"expected a dataset named '/nope'"):
        read_frames(f"{p}:/nope")
    with pytest.raises(FrameReadError, match=r"to be a dataset \(got a group\)"):
        read_frames(p, dataset="/scan")
    with pytest.raises(FrameReadError, match=r"expected a 2-D frame .* \(got 1-D"):
        read_frames(p, dataset="/info/vector")
    empty = tmp_path / "e.h5"
    with h5py.File(empty, "w") as f:
        f["v"] = np.arange(3)
    with pytest.raises(FrameReadError, match=r"at least 2 dimensions \(got none"):
        read_frames(empty)


def test_missing_file_directory_and_unknown_extension(tmp_path):
    with pytest.raises(FrameReadError, match=r"existing frame file \(got a path that does not exist\)"):
        read_frames(tmp_path / "nope.tif")
    with pytest.raises(FrameReadError, match=r"\(got a directory\)"):
        read_frames(tmp_path)
    odd = tmp_path / "frames.xyz"
    odd.write_bytes(b"123")
    with pytest.raises(FrameReadError, match=r"expected one of the extensions .*\(got '\.xyz'\)"):
        read_frames(odd)


@pytest.mark.parametrize("name", ["bad.tif", "bad.npy", "bad.h5"])
def test_corrupt_files(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"this is not an image file at all" * 4)
    with pytest.raises(FrameReadError, match=r"expected a readable .* file \(got ") as e:
        read_frames(p)
    assert e.value.__cause__ is not None  # chained


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.arange(10.0), r"\(got 1-D data of shape \(10,\)\)"),
        (np.zeros((2, 3, 4, 5)), r"\(got 4-D data"),
        (np.zeros((0, 4, 4)), r"non-empty frames \(got shape \(0, 4, 4\)\)"),
        (np.zeros((3, 4), dtype=bool), r"real numeric pixel data .* \(got dtype bool\)"),
        (np.zeros((3, 4), dtype=np.complex64), r"\(got dtype complex64\)"),
        (np.array([["a", "b"], ["c", "d"]]), r"\(got dtype <U1\)"),
    ],
)
def test_bad_data_in_npy(tmp_path, data, match):
    p = tmp_path / "d.npy"
    np.save(p, data)
    with pytest.raises(FrameReadError, match=match):
        read_frames(p)


def test_npy_object_array_refused_without_pickle(tmp_path):
    p = tmp_path / "o.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FrameReadError, match="readable .npy file"):
        read_frames(p)


@pytest.mark.skipif(importlib.util.find_spec("rsciio") is not None, reason="rosettasciio is installed")
@pytest.mark.parametrize("ext", [".dm3", ".dm4", ".emd", ".ser"])
def test_rosettasciio_formats_name_the_extra(tmp_path, ext):
    p = tmp_path / f"f{ext}"
    p.write_bytes(b"\0" * 64)
    with pytest.raises(FrameReadError, match=r"pip install n2a\[io\]"):
        read_frames(p)


def test_write_stack_round_trip_atomic_and_no_overwrite(tmp_path, stack):
    p = tmp_path / "out.tif"
    write_stack(p, stack, meta={"pixel_size_nm": 0.02, "model": "lite"})
    st = read_frames(p)
    assert st.frames.dtype == np.float32
    np.testing.assert_array_equal(st.frames, stack.astype(np.float32))
    assert st.meta == {"pixel_size_nm": 0.02, "model": "lite"}
    assert os.listdir(tmp_path) == ["out.tif"]  # no temp file left behind
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        write_stack(p, stack[:1])
    assert read_frames(p).frames.shape == (3, 12, 10)  # untouched
    write_stack(p, stack[0], overwrite=True)
    assert read_frames(p).frames.shape == (1, 12, 10)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        write_stack(tmp_path / "m.tif", stack, meta={"x": object()})
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        write_stack(tmp_path / "v.tif", np.zeros(5))
    assert sorted(os.listdir(tmp_path)) == ["out.tif"]
