"""Rolling CSS for the live path, reusing each frame's filtered moments for the next pair.

``ssim(x_t, x_{t-1})`` needs five Gaussian filters: of ``x_t``, ``x_t²``, ``x_{t-1}``,
``x_{t-1}²`` and ``x_t x_{t-1}``. On a stream, the two of ``x_{t-1}`` were already computed for the
previous pair, so :class:`StreamingCSS` runs three filters per frame instead of five, with the same
float64 arithmetic as :func:`noise2atom.metrics.ssim` (the tests check the values agree with it).
"""
from __future__ import annotations

from collections import deque

import numpy as np
from scipy import ndimage

from noise2atom.metrics import to_unit

__all__ = ["StreamingCSS"]

# CSS as defined in design.md §3 (the same constants as noise2atom.metrics.ssim).
SIGMA, TRUNCATE, K1, K2, DATA_RANGE = 1.5, 3.5, 0.01, 0.03, 1.0
_RADIUS = int(TRUNCATE * SIGMA + 0.5)


def _filter(v: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(v, SIGMA, truncate=TRUNCATE, mode="reflect")


class StreamingCSS:
    """CSS of consecutive frames mapped to [0, 1] with fixed limits, and its rolling mean.

    Parameters
    ----------
    window
        Number of latest CSS values in the rolling mean.
    lo, hi
        Fixed mapping limits (``to_unit(frame, lo, hi)``).

    Examples
    --------
    >>> c = StreamingCSS(window=2)
    >>> c.update(np.zeros((16, 16)))
    (None, None)
    >>> c.update(np.zeros((16, 16)))
    (1.0, 1.0)
    """

    def __init__(self, window: int = 10, *, lo: float = 0.0, hi: float = 1.0) -> None:
        if int(window) != window or window < 1:
            raise ValueError(f"window must be a positive integer (got {window!r})")
        if not hi > lo:
            raise ValueError(f"hi must be greater than lo (got lo={lo}, hi={hi})")
        self.window, self.lo, self.hi = int(window), float(lo), float(hi)
        self._prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._values: deque[float] = deque(maxlen=self.window)

    def update(self, frame: np.ndarray) -> tuple[float | None, float | None]:
        """Add a frame; return (CSS with the previous frame, rolling mean), ``None`` at first."""
        if frame.ndim != 2:
            raise ValueError(f"frame must be 2-D (got shape {frame.shape})")
        u = to_unit(frame, self.lo, self.hi)
        mu, m2 = _filter(u), _filter(u * u)
        prev, self._prev = self._prev, (u, mu, m2)
        if prev is None or prev[0].shape != u.shape:
            self._values.clear()
            return None, None
        if min(u.shape) < 2 * _RADIUS + 1:
            raise ValueError(f"frames must be at least {2 * _RADIUS + 1}x{2 * _RADIUS + 1} for "
                             f"CSS (got {u.shape})")
        pu, pmu, pm2 = prev
        vx = m2 - mu * mu
        vy = pm2 - pmu * pmu
        vxy = _filter(u * pu) - mu * pmu
        c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
        s = ((2 * mu * pmu + c1) * (2 * vxy + c2)) / ((mu**2 + pmu**2 + c1) * (vx + vy + c2))
        value = float(s[_RADIUS:-_RADIUS, _RADIUS:-_RADIUS].mean(dtype=np.float64))
        self._values.append(value)
        return value, float(np.mean(self._values))
