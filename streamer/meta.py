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


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _differs(a: Any, b: Any, rel_tol: float) -> bool:
    if _is_num(a) and _is_num(b):
        return not math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=1e-12)
    if not isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and b:
        # The model was trained on several values: a number inside their range (within the
        # tolerance) or one of the listed values matches.
        if _is_num(a) and all(_is_num(v) for v in b):
            lo, hi = min(b), max(b)
            return not (lo * (1 - rel_tol) - 1e-12 <= a <= hi * (1 + rel_tol) + 1e-12)
        return all(_differs(a, v, rel_tol) for v in b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y, rel_tol) for x, y in zip(a, b))
    return a != b


def compare_meta(series_meta: Mapping[str, Any] | None, model_meta: Mapping[str, Any] | None, *,
                 rel_tol: float = 0.01, ignore: frozenset[str] = IGNORED_META_KEYS) -> list[str]:
    """Names of the settings present in both whose values differ (sorted).

    Numbers compare within ``rel_tol`` (relative), everything else exactly; a list in the model's
    meta against a single series value means the model was trained on several values, and a number
    inside their range (or one of the listed values) matches. Keys only one side has cannot be
    compared and are not reported, nor are bookkeeping keys (:data:`IGNORED_META_KEYS`).

    Examples
    --------
    >>> compare_meta({"pixel_size_nm": 0.025, "detector": "HAADF", "seed": 1},
    ...              {"pixel_size_nm": 0.05, "detector": "HAADF", "seed": 2, "dwell_time_us": 1})
    ['pixel_size_nm']
    >>> compare_meta({"peak_counts": 0.7, "dwell_time_us": 3.0},
    ...              {"peak_counts": [0.4, 1.0, 2.0], "dwell_time_us": [1.0, 2.0]})
    ['dwell_time_us']
    """
    if not series_meta or not model_meta:
        return []
    return sorted(k for k in series_meta.keys() & model_meta.keys()
                  if k not in ignore and _differs(series_meta[k], model_meta[k], rel_tol))
