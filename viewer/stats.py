"""Small rolling statistics for the status bar: event rate and latency percentiles."""
from __future__ import annotations

import collections
import math

import numpy as np

__all__ = ["RateMeter", "LatencyWindow"]


class RateMeter:
    """Events per second over the last `window_s` seconds.

    Examples
    --------
    >>> meter = RateMeter(window_s=1.0)
    >>> for t in (0.0, 0.1, 0.2, 0.3, 0.4):
    ...     meter.add(t)
    >>> meter.rate(now=0.5)
    10.0
    """

    def __init__(self, *, window_s: float = 2.0, max_events: int = 10_000) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0 (got {window_s!r})")
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque(maxlen=max_events)

    def add(self, t: float) -> None:
        """Record one event at monotonic time `t` (seconds)."""
        self._times.append(t)

    def rate(self, *, now: float) -> float:
        """Events per second: events in the window divided by the span they cover."""
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        n = len(self._times)
        if n < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (n - 1) / span if span > 0 else 0.0


class LatencyWindow:
    """Latency samples (ns) from the last `window_s` seconds, reported as p50 / p99 in ms.

    Examples
    --------
    >>> w = LatencyWindow(window_s=10.0)
    >>> for i in range(100):
    ...     w.add(t=0.0, latency_ns=(i + 1) * 1_000_000)
    >>> [round(v) for v in w.percentiles_ms(now=1.0)]
    [50, 99]
    """

    def __init__(self, *, window_s: float = 5.0, max_samples: int = 10_000) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0 (got {window_s!r})")
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=max_samples)

    def add(self, *, t: float, latency_ns: int) -> None:
        """Record a latency measured at monotonic time `t` (seconds)."""
        self._samples.append((t, latency_ns))

    def percentiles_ms(self, *, now: float) -> tuple[float, float]:
        """(p50, p99) in milliseconds over the window; NaN when there are no samples."""
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()
        if not self._samples:
            return (math.nan, math.nan)
        lat = np.fromiter((s[1] for s in self._samples), dtype=np.float64, count=len(self._samples))
        p50, p99 = np.percentile(lat, [50, 99], method="lower")
        return (float(p50) / 1e6, float(p99) / 1e6)
