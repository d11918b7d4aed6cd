"""Swift's scan metadata as protocol v1 ``meta``, frames as wire arrays, and the series numbering.

Nothing here imports Swift: the adaptor (:mod:`.swift_bridge`) hands in plain dicts and numbers, so
the mapping is tested without a running Swift.

A completed scan frame from Nion's ``ScanHardwareSource`` carries (nionswift-instrumentation 23.6)::

    metadata["hardware_source"] = {"hardware_source_id", "channel_id", "channel_name",
                                   "frame_index", "pixel_time_us", "line_time_us",
                                   "reference_key", "valid_rows", ...}
    metadata["scan"] = {"fov_nm", "rotation_deg", "scan_id", "scan_size", ...}
    metadata["instrument"] = {"high_tension", ...}          # volts, where the instrument says
    dimensional_calibrations = [y, x]                         # scale per pixel, units "nm" ...
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["SeriesNumbering", "swift_meta", "wire_frame"]

# A length unit of a Swift calibration -> nanometres.
_TO_NM = {"nm": 1.0, "pm": 1e-3, "Å": 0.1, "A": 0.1, "µm": 1e3, "um": 1e3, "mm": 1e6, "m": 1e9}


def _number(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _pixel_size_nm(calibrations: Sequence[tuple[float, str]] | None, scan: Mapping[str, Any],
                   width: int) -> float | None:
    """From the x calibration when it is a length, else the field of view over the width."""
    if calibrations:
        scale, units = calibrations[-1]
        factor = _TO_NM.get((units or "").strip())
        if factor is not None and _number(scale):
            return abs(float(scale)) * factor
    fov = _number(scan.get("fov_nm"))
    return fov / width if fov and width else None


def swift_meta(metadata: Mapping[str, Any], *, shape: tuple[int, int],
               calibrations: Sequence[tuple[float, str]] | None = None) -> dict[str, Any]:
    """Protocol ``meta`` from a Swift scan frame's metadata and its (scale, units) calibrations.

    Keys ``n2a-stream`` compares with the model's (``pixel_size_nm``, ``dwell_time_us``,
    ``detector``, ``voltage_kV``) where Swift has them, plus bookkeeping: ``frame_index``,
    ``source`` (``nionswift:<hardware source>``), ``swift_channel`` (Swift's reference key of the
    raw data item, which names the denoised item back in Swift), ``fov_nm``, ``line_time_us``,
    ``rotation_deg``, ``scan_id``.

    Examples
    --------
    >>> md = {"hardware_source": {"hardware_source_id": "usim_scan_device", "channel_name": "HAADF",
    ...                           "frame_index": 3, "pixel_time_us": 1.0,
    ...                           "reference_key": "usim_scan_device_a"},
    ...       "scan": {"fov_nm": 100.0}, "instrument": {"high_tension": 100000.0}}
    >>> m = swift_meta(md, shape=(256, 256), calibrations=[(0.390625, "nm"), (0.390625, "nm")])
    >>> m["pixel_size_nm"], m["dwell_time_us"], m["detector"], m["voltage_kV"], m["frame_index"]
    (0.390625, 1.0, 'HAADF', 100.0, 3)
    >>> swift_meta(md, shape=(256, 256), calibrations=[(2.5, "Å"), (2.5, "Å")])["pixel_size_nm"]
    0.25
    """
    hw = metadata.get("hardware_source") or {}
    scan = metadata.get("scan") or {}
    instrument = metadata.get("instrument") or {}
    meta: dict[str, Any] = {}
    size = _pixel_size_nm(calibrations, scan, shape[1])
    if size is not None:
        meta["pixel_size_nm"] = size
    dwell = _number(hw.get("pixel_time_us", scan.get("pixel_time_us")))
    if dwell is not None:
        meta["dwell_time_us"] = dwell
    detector = hw.get("channel_name") or hw.get("channel_id")
    if detector:
        meta["detector"] = str(detector)
    ht = _number(instrument.get("high_tension"))
    if ht:
        meta["voltage_kV"] = ht / 1000.0
    if isinstance(hw.get("frame_index"), (int, np.integer)):
        meta["frame_index"] = int(hw["frame_index"])
    if hw.get("hardware_source_id"):
        meta["source"] = f"nionswift:{hw['hardware_source_id']}"
    if hw.get("reference_key"):
        meta["swift_channel"] = str(hw["reference_key"])
    for key, src in (("fov_nm", scan), ("line_time_us", hw), ("rotation_deg", scan)):
        v = _number(src.get(key))
        if v is not None:
            meta[key] = v
    if scan.get("scan_id"):
        meta["scan_id"] = str(scan["scan_id"])
    return meta


def wire_frame(data: Any) -> np.ndarray:
    """A fresh (H, W) array in a protocol dtype: a copy, so Swift may reuse its buffer.

    Protocol dtypes pass as they are; float64 becomes float32, int8 int16, (u)int64 float32
    (scan data never needs more than 24 bits). Anything but a 2-D array is refused.

    >>> wire_frame(np.ones((2, 3))).dtype.name
    'float32'
    >>> wire_frame(np.ones((2, 2, 2)))
    Traceback (most recent call last):
    ...
    ValueError: a scan frame must be a 2-D image (got shape (2, 2, 2))
    """
    a = np.asarray(data)
    if a.ndim != 2 or min(a.shape) < 1:
        raise ValueError(f"a scan frame must be a 2-D image (got shape {a.shape})")
    keep = {"uint8", "uint16", "uint32", "int16", "int32", "float32"}
    if a.dtype.name in keep:
        return np.array(a, copy=True, order="C")
    if a.dtype.name == "int8":
        return a.astype(np.int16)
    if a.dtype.kind in "fiu" or a.dtype == np.bool_:
        return a.astype(np.float32)
    raise ValueError(f"a scan frame must hold numbers (got dtype {a.dtype})")


class SeriesNumbering:
    """Series name and ``seq`` for each completed frame of one Swift channel.

    ``seq`` is Swift's frame index while it increases; a frame index that does not increase (a scan
    restarted), a missing one, or a new frame shape or dtype starts a new series
    (``<prefix>-<n>``), so ``n2a-stream`` never sees ``seq`` go backwards within a series.

    >>> s = SeriesNumbering("swift-a")
    >>> [s.next(i, (8, 8), "float32")[:2] for i in (0, 1, 2, 0, 1)]
    [('swift-a-1', 0), ('swift-a-1', 1), ('swift-a-1', 2), ('swift-a-2', 0), ('swift-a-2', 1)]
    >>> s.next(None, (8, 8), "float32"), s.next(None, (8, 8), "float32")
    (('swift-a-2', 2, False), ('swift-a-2', 3, False))
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.count = 0
        self._last: int | None = None
        self._key: tuple | None = None

    def next(self, frame_index: int | None, shape: tuple[int, ...], dtype: str
             ) -> tuple[str, int, bool]:
        """``(series, seq, is_new_series)`` for the next frame."""
        key = (tuple(shape), dtype)
        if frame_index is None:
            seq = 0 if self._last is None else self._last + 1
        else:
            seq = int(frame_index)
        new = self._key != key or self._last is None or seq <= self._last
        if new:
            self.count += 1
            self._key = key
        self._last = seq
        return f"{self.prefix}-{self.count}", seq, new
