"""Reading frame stacks from files, and writing them.

Formats: TIFF (single image or stack), ``.npy``, HDF5 (``file.h5`` or ``file.h5:/group/dataset``),
and DM3 / DM4 / EMD / SER through rosettasciio (the ``io`` extra: ``pip install n2a[io]``).
Every failure is a :class:`FrameReadError` that says what was expected and what was got.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_stack(d / "s.tif", np.zeros((2, 8, 8)), meta={"pixel_size_nm": 0.02})
>>> st = read_frames(d / "s.tif")
>>> st.frames.shape, st.meta["pixel_size_nm"]
((2, 8, 8), 0.02)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from noise2atom.files import atomic_write

__all__ = ["FrameReadError", "FrameStack", "read_frames", "write_stack"]

_TIFF = {".tif", ".tiff"}
_HDF5 = {".h5", ".hdf5", ".hdf", ".he5", ".nxs"}
_RSCIIO = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".emd": "emd", ".ser": "tia"}


class FrameReadError(ValueError):
    """A frame file could not be read as a stack of 2-D frames."""


@dataclass(frozen=True)
class FrameStack:
    """Frames read from one file.

    Attributes
    ----------
    frames : ndarray, shape (T, H, W)
        The file's own numeric dtype (not converted).
    meta : dict
        Acquisition metadata found in the file (JSON-serialisable).
    source : str
        Where the frames came from (path, plus ``:/dataset`` for HDF5).
    """

    frames: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _jsonable(v: Any) -> Any:
    """Metadata values as plain JSON types (numpy scalars / arrays, bytes, nested dicts)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def _check(data: Any, source: str) -> np.ndarray:
    a = np.asarray(data)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise FrameReadError(f"{source}: expected real numeric pixel data (integer or float) (got dtype {a.dtype})")
    if a.ndim not in (2, 3):
        raise FrameReadError(f"{source}: expected a 2-D frame or a 3-D (T, H, W) stack "
                             f"(got {a.ndim}-D data of shape {a.shape})")
    if a.size == 0:
        raise FrameReadError(f"{source}: expected non-empty frames (got shape {a.shape})")
    return a[None] if a.ndim == 2 else a


def _split_dataset(path: Path) -> tuple[Path, str | None]:
    """``file.h5:/group/ds`` -> (file.h5, /group/ds); other paths unchanged."""
    s = str(path)
    for ext in _HDF5:
        i = s.lower().find(ext + ":")
        if i > 0:
            return Path(s[: i + len(ext)]), s[i + len(ext) + 1:] or None
    return path, None


def _read_tiff(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise FrameReadError(f"{path}: expected at least one image in the TIFF (got none)")
        data = tif.series[0].asarray() if tif.series else tif.asarray()
        page = tif.pages[0]
        meta: dict[str, Any] = {}
        desc = page.description if hasattr(page, "description") else ""
        if desc:
            try:
                parsed = json.loads(desc)
            except ValueError:
                meta["description"] = desc
            else:
                if isinstance(parsed, dict):
                    parsed.pop("shape", None)  # tifffile's own shaped-series note
                    meta.update(parsed)
        tags = page.tags
        if "XResolution" in tags and "ResolutionUnit" in tags:
            num, den = tags["XResolution"].value
            unit = int(tags["ResolutionUnit"].value)
            if num and den and unit in (2, 3):  # pixels per inch / per cm
                per_nm = num / den / (2.54e7 if unit == 2 else 1e7)
                meta.setdefault("resolution_px_per_nm", per_nm)
                meta.setdefault("pixel_size_nm", 1.0 / per_nm)
        ij = tif.imagej_metadata or {}
        if ij.get("unit") in ("nm", "micron", "µm", "um") and "XResolution" in tags and "pixel_size_nm" not in meta:
            num, den = tags["XResolution"].value
            if num:
                meta["pixel_size_nm"] = den / num * (1.0 if ij["unit"] == "nm" else 1e3)
    return data, meta


def _read_hdf5(path: Path, dataset: str | None) -> tuple[np.ndarray, dict[str, Any], str]:
    import h5py

    with h5py.File(path, "r") as f:
        if dataset is None:
            found: list[str] = []

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset) and obj.ndim >= 2 and not found:
                    found.append(name)

            f.visititems(visit)
            if not found:
                raise FrameReadError(f"{path}: expected an HDF5 dataset with at least 2 dimensions "
                                     f"(got none; top-level entries: {sorted(f.keys())})")
            dataset = "/" + found[0]
        if dataset not in f:
            raise FrameReadError(f"{path}: expected a dataset named {dataset!r} (got entries {sorted(f.keys())})")
        ds = f[dataset]
        if not isinstance(ds, h5py.Dataset):
            raise FrameReadError(f"{path}: expected {dataset!r} to be a dataset (got a group)")
        data = ds[()]
        meta = {k: _jsonable(v) for k, v in ds.attrs.items()}
    return data, meta, dataset


def _read_rsciio(path: Path, ext: str) -> tuple[np.ndarray, dict[str, Any]]:
    import importlib

    module = _RSCIIO[ext]
    try:
        reader = importlib.import_module(f"rsciio.{module}")
    except ImportError as e:
        raise FrameReadError(f"{path}: reading {ext} files needs rosettasciio: pip install n2a[io] "
                             f"(got ImportError: {e})") from e
    items = reader.file_reader(str(path))
    images = [it for it in items if np.ndim(it.get("data")) >= 2]
    if not images:
        raise FrameReadError(f"{path}: expected an image signal with at least 2 dimensions "
                             f"(got {len(items)} signals, none 2-D or more)")
    it = images[0]
    meta: dict[str, Any] = {"metadata": _jsonable(it.get("metadata", {}))}
    axes = it.get("axes", [])
    if len(axes) >= 2:
        ax = axes[-1]
        meta["axes"] = _jsonable(axes)
        scale, units = ax.get("scale"), str(ax.get("units", ""))
        factor = {"nm": 1.0, "pm": 1e-3, "Å": 0.1, "A": 0.1, "µm": 1e3, "um": 1e3}.get(units)
        if scale and factor:
            meta["pixel_size_nm"] = float(scale) * factor
    meta.update(_acquisition_settings(it))
    return np.asarray(it["data"]), meta


def _lookup(tree: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _acquisition_settings(item: dict[str, Any]) -> dict[str, Any]:
    """n2a's flat acquisition keys (``voltage_kV``, ``dwell_time_us``, ...) from a vendor file.

    RosettaSciIO returns the vendor's tags (``original_metadata``) and a ``mapping`` from them to
    HyperSpy's metadata paths, with unit conversions, which HyperSpy applies on load; we apply the
    few that the model's settings check needs, plus two Velox tags the mapping leaves out.
    """
    original = item.get("original_metadata") or {}
    wanted = {  # HyperSpy path -> (our key, factor from HyperSpy's unit to ours)
        "Acquisition_instrument.TEM.beam_energy": ("voltage_kV", 1.0),  # kV
        "Acquisition_instrument.TEM.dwell_time": ("dwell_time_us", 1e6),  # s
        "Acquisition_instrument.TEM.beam_current": ("beam_current_pA", 1e3),  # nA
        "Acquisition_instrument.TEM.Detector.Camera.Name": ("detector", None),
    }
    out: dict[str, Any] = {}
    for src, target in (item.get("mapping") or {}).items():
        dst, convert = target if isinstance(target, tuple) else (target, None)
        if dst not in wanted or _lookup(original, src) is None:
            continue
        key, factor = wanted[dst]
        try:
            value = _lookup(original, src)
            value = convert(value) if convert is not None else value
            value = str(value) if factor is None else float(value) * factor
        except (TypeError, ValueError, KeyError, AttributeError):
            continue  # a tag in an unexpected form is left out, not guessed
        if factor is None or (np.isfinite(value) and value > 0):  # DM writes 0 for "unknown"
            out[key] = value
    dwell = _lookup(original, "Scan.DwellTime")  # Velox: seconds, as a string
    if "dwell_time_us" not in out and dwell is not None:
        try:
            out["dwell_time_us"] = float(dwell) * 1e6
        except (TypeError, ValueError):
            pass
    title = _lookup(item.get("metadata") or {}, "General.title")
    if "detector" not in out and "DetectorMetadata" in original and title:
        out["detector"] = str(title)  # Velox names each image after its detector (HAADF, DF4...)
    return out


def read_frames(path: str | os.PathLike[str], *, dataset: str | None = None) -> FrameStack:
    """Read a stack of frames (T, H, W) from a file; a single image gives T = 1.

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff``, ``.npy``, ``.h5``/``.hdf5`` (optionally ``file.h5:/group/ds``),
        ``.dm3``/``.dm4``/``.emd``/``.ser`` (needs the ``io`` extra).
    dataset : str, optional
        HDF5 dataset path; default: the one after ``:`` in ``path``, else the first dataset with
        at least 2 dimensions.

    Raises
    ------
    FrameReadError
        Missing, unreadable or corrupt file; unknown extension; data that is not 2-D / 3-D,
        empty, or not real numbers.
    """
    p, ds_in_path = _split_dataset(Path(path))
    dataset = dataset if dataset is not None else ds_in_path
    source = str(p)
    if not p.exists():
        raise FrameReadError(f"{p}: expected an existing frame file (got a path that does not exist)")
    if p.is_dir():
        raise FrameReadError(f"{p}: expected a frame file (got a directory)")
    ext = p.suffix.lower()
    known = sorted(_TIFF | _HDF5 | set(_RSCIIO) | {".npy"})
    meta: dict[str, Any] = {}
    try:
        if ext in _TIFF:
            data, meta = _read_tiff(p)
        elif ext == ".npy":
            data = np.load(p, allow_pickle=False)
        elif ext in _HDF5:
            data, meta, used = _read_hdf5(p, dataset)
            source = f"{p}:{used}"
        elif ext in _RSCIIO:
            data, meta = _read_rsciio(p, ext)
        else:
            raise FrameReadError(f"{p}: expected one of the extensions {', '.join(known)} (got {ext or 'none'!r})")
    except FrameReadError:
        raise
    except Exception as e:  # each library has its own error zoo; name the file and the cause
        raise FrameReadError(f"{p}: expected a readable {ext} file (got {type(e).__name__}: {e})") from e
    return FrameStack(frames=_check(data, source), meta=_jsonable(meta), source=source)


def write_stack(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    *,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> None:
    """Write frames as a float32 TIFF stack with ``meta`` as JSON in the image description.

    The file is written to a temporary file in the same folder and then moved into place
    (``os.replace``), so readers never see a half-written stack.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    ValueError
        Frames not 2-D / 3-D, or ``meta`` not JSON-serialisable.
    """
    import tifffile

    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} already exists; pass overwrite=True to replace it")
    a = np.asarray(frames)
    if a.ndim not in (2, 3) or a.size == 0:
        raise ValueError(f"frames must be a non-empty 2-D frame or 3-D (T, H, W) stack (got shape {a.shape})")
    try:
        desc = json.dumps(meta or {})
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be JSON-serialisable (got {type(e).__name__}: {e})") from e
    atomic_write(p, lambda tmp: tifffile.imwrite(
        tmp, a.astype(np.float32, copy=False), description=desc, metadata=None,
        photometric="minisblack"))  # photometric: a 3-frame stack is not RGB
