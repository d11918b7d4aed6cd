"""Compare a series' acquisition settings with the ones the model was trained on (design.md §6)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["IGNORED_META_KEYS", "compare_meta"]

#: Bookkeeping keys that say nothing about the acquisition settings the model depends on.
IGNORED_META_KEYS = frozenset({
    "seed", "n_frames", "first_frame", "shape", "simulator", "scene", "source", "series",
    "drift_px_per_frame", "scan_jitter_px", "surface_dynamics", "time", "timestamp", "date",
    "start_time", "frame_index", "comment", "operator", "sample",
})


def _differs(a: Any, b: Any, rel_tol: float) -> bool:
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return not math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y, rel_tol) for x, y in zip(a, b))
    return a != b


def compare_meta(series_meta: Mapping[str, Any] | None, model_meta: Mapping[str, Any] | None, *,
                 rel_tol: float = 0.01, ignore: frozenset[str] = IGNORED_META_KEYS) -> list[str]:
    """Names of the settings present in both whose values differ (sorted).

    Numbers compare within ``rel_tol`` (relative), everything else exactly; keys only one side has
    cannot be compared and are not reported.

    Examples
    --------
    >>> compare_meta({"pixel_size_nm": 0.025, "detector": "HAADF", "seed": 1},
    ...              {"pixel_size_nm": 0.05, "detector": "HAADF", "seed": 2, "dwell_time_us": 1})
    ['pixel_size_nm']
    """
    if not series_meta or not model_meta:
        return []
    return sorted(k for k in series_meta.keys() & model_meta.keys()
                  if k not in ignore and _differs(series_meta[k], model_meta[k], rel_tol))
