"""Snapshots: the frames on screen as TIFF (header as JSON metadata) and the window as PNG."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

__all__ = ["save_frame_tiff", "read_frame_tiff", "snapshot_stem"]


def snapshot_stem(series: str, seq: int, *, when: float | None = None) -> str:
    """A file-name stem like ``series-1_seq000042_20240501-101500`` (unsafe characters replaced).

    Examples
    --------
    >>> snapshot_stem("my series/1", 42, when=0.0)[:27]
    'my_series_1_seq000042_19700'
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", series).strip("_") or "series"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if when is None else when))
    return f"{safe}_seq{seq:06d}_{stamp}"


def save_frame_tiff(path: Path, image: np.ndarray, header: dict[str, Any]) -> Path:
    """Write `image` to `path` as TIFF with `header` (JSON) in the ImageDescription tag."""
    description = json.dumps(header, default=str, sort_keys=True)
    tifffile.imwrite(path, np.ascontiguousarray(image), description=description, metadata=None)
    return path


def read_frame_tiff(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read back what `save_frame_tiff` wrote: (image, header)."""
    with tifffile.TiffFile(path) as tif:
        image = tif.pages[0].asarray()
        description = tif.pages[0].description
    try:
        header = json.loads(description)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} must carry a JSON header in its ImageDescription (got {description[:80]!r})") from e
    return image, header
