"""Counters, rates and latency percentiles for the live path and the viewer; all thread-safe and
bounded. Light (numpy only), so the viewer imports it."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

__all__ = ["Counters", "LatencyWindow", "RateLimitedLog", "RateMeter"]


class Counters:
    """Named integer counters shared between threads.

    Examples
    --------
    >>> c = Counters()
    >>> c.add("dtype"); c.add("dtype"); c.add("too_large", 3)
    >>> c.snapshot(), c.total()
    ({'dtype': 2, 'too_large': 3}, 5)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


class LatencyWindow:
    """Recent samples (ns) of a duration, with percentiles in ms: the last ``maxlen`` samples, and
    with ``window_s`` only those of the last ``window_s`` seconds (by the ``t`` given to
    :meth:`add`, monotonic seconds). :meth:`mean_ms` is over every sample ever added.

    Examples
    --------
    >>> w = LatencyWindow(maxlen=100)
    >>> for v in range(1, 101): w.add(v * 1_000_000)
    >>> round(w.percentile_ms(50), 1), w.count
    (50.5, 100)
    >>> w = LatencyWindow(window_s=10.0)
    >>> w.add(1_000_000, t=0.0); w.add(3_000_000, t=20.0)
    >>> w.percentile_ms(50, now=25.0), w.percentile_ms(50, now=40.0), w.mean_ms()
    (3.0, None, 2.0)
    """

    def __init__(self, maxlen: int = 2000, *, window_s: float | None = None) -> None:
        if window_s is not None and not window_s > 0:
            raise ValueError(f"window_s must be > 0 (got {window_s!r})")
        self.window_s = window_s
        self._lock = threading.Lock()
        self._values: deque[tuple[float, int]] = deque(maxlen=maxlen)
        self.count = 0
        self._sum = 0

    def add(self, ns: int, *, t: float | None = None) -> None:
        """Record one sample measured at monotonic time ``t`` (default: now)."""
        t = time.monotonic() if t is None else t
        with self._lock:
            self._values.append((t, int(ns)))
            self.count += 1
            self._sum += int(ns)

    def percentile_ms(self, q: float, *, now: float | None = None) -> float | None:
        """The ``q``-th percentile of the recent samples in ms (``None`` without samples)."""
        with self._lock:
            if self.window_s is not None:
                now = time.monotonic() if now is None else now
                while self._values and self._values[0][0] < now - self.window_s:
                    self._values.popleft()
            if not self._values:
                return None
            values = np.fromiter((v for _, v in self._values), dtype=np.int64,
                                 count=len(self._values))
        return float(np.percentile(values, q)) / 1e6

    def mean_ms(self) -> float | None:
        """Mean over every sample ever added, in ms."""
        with self._lock:
            return self._sum / self.count / 1e6 if self.count else None


class RateMeter:
    """Events per second over the last ``window_s`` seconds: the events in the window divided by
    the span they cover (0 with fewer than two).

    Examples
    --------
    >>> meter = RateMeter(window_s=1.0)
    >>> for t in (0.0, 0.1, 0.2, 0.3, 0.4):
    ...     meter.tick(t)
    >>> meter.rate(now=0.5), meter.rate(now=2.0)
    (10.0, 0.0)
    """

    def __init__(self, window_s: float = 2.0, maxlen: int = 100_000) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0 (got {window_s!r})")
        self.window_s = window_s
        self._lock = threading.Lock()
        self._times: deque[float] = deque(maxlen=maxlen)

    def tick(self, now: float | None = None) -> None:
        """Record one event at monotonic time ``now`` (seconds; default: now)."""
        with self._lock:
            self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._times and self._times[0] < now - self.window_s:
                self._times.popleft()
            n = len(self._times)
            span = self._times[-1] - self._times[0] if n >= 2 else 0.0
        return (n - 1) / span if span > 0 else 0.0


class RateLimitedLog:
    """Log a message at most once per ``interval_s`` per key, saying how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float = 1.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e9) < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            n = self._suppressed.pop(key, 0)
        if n:
            msg += f" ({n} more like it suppressed)"
        self.logger.warning(msg, *args)


class StreamStats:
    """Everything the stream counts, shared by its stages (each field is thread-safe)."""

    STAGES = ("receive", "queue", "normalise", "resample", "denoise", "lattice", "css", "send",
              "receive_to_publish", "acq_to_publish")

    def __init__(self) -> None:
        self.counts = Counters()  # frames_in, published, dropped, dropped_at_stop, gaps, series
        self.rejected = Counters()  # by reason
        self.latency = LatencyWindow()  # t_acq -> published
        self.stages = {s: LatencyWindow() for s in self.STAGES}
        self.rate_in = RateMeter()
        self.rate_out = RateMeter()
        self._lock = threading.Lock()
        self.css_sum = {"css": 0.0, "css_raw": 0.0}
        self.css_n = {"css": 0, "css_raw": 0}
        self.last: dict[str, object] = {}

    def add_css(self, key: str, value: float | None) -> None:
        if value is None:
            return
        with self._lock:
            self.css_sum[key] += value
            self.css_n[key] += 1

    def css_mean(self, key: str) -> float | None:
        with self._lock:
            return self.css_sum[key] / self.css_n[key] if self.css_n[key] else None

    def set_last(self, **values: object) -> None:
        with self._lock:
            self.last.update(values)

    def get_last(self) -> dict[str, object]:
        with self._lock:
            return dict(self.last)
