"""Counters, rates and latency percentiles for the live path; all thread-safe and bounded."""
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
    """The last ``maxlen`` samples (ns) of a duration, with percentiles in ms.

    Examples
    --------
    >>> w = LatencyWindow(maxlen=100)
    >>> for v in range(1, 101): w.add(v * 1_000_000)
    >>> round(w.percentile_ms(50), 1), w.count
    (50.5, 100)
    """

    def __init__(self, maxlen: int = 2000) -> None:
        self._lock = threading.Lock()
        self._values: deque[int] = deque(maxlen=maxlen)
        self.count = 0
        self._sum = 0

    def add(self, ns: int) -> None:
        with self._lock:
            self._values.append(int(ns))
            self.count += 1
            self._sum += int(ns)

    def percentile_ms(self, q: float) -> float | None:
        """The ``q``-th percentile of the recent samples in ms (``None`` without samples)."""
        with self._lock:
            if not self._values:
                return None
            values = np.fromiter(self._values, dtype=np.int64, count=len(self._values))
        return float(np.percentile(values, q)) / 1e6

    def mean_ms(self) -> float | None:
        """Mean over every sample ever added, in ms."""
        with self._lock:
            return self._sum / self.count / 1e6 if self.count else None


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 2.0, maxlen: int = 100_000) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self._times: deque[float] = deque(maxlen=maxlen)

    def tick(self, now: float | None = None) -> None:
        with self._lock:
            self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._times and self._times[0] < now - self.window_s:
                self._times.popleft()
            return len(self._times) / self.window_s


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

    STAGES = ("receive", "queue", "normalise", "denoise", "css", "send",
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
