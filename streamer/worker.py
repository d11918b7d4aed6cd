"""A worker thread that reports its error to its owner instead of dying silently.

One copy for every thread n2a starts: the stream's three stages, the replay and folder-watch
sources run from a thread, and the viewer's receiver. Light (``threading`` only), so the viewer
imports it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Worker"]

log = logging.getLogger("n2a.worker")


class Worker(threading.Thread):
    """Runs ``work`` (or the overriding ``self.work()``); an exception is stored in :attr:`error`.

    The owner calls :meth:`maybe_raise` every tick. Workers loop with short timeouts and check
    their stop event, so :meth:`join_or_raise` with a deadline always returns or raises
    ``TimeoutError``.

    Examples
    --------
    >>> w = Worker(name="demo", work=lambda: 1 / 0)
    >>> w.start(); w.join_or_raise(5)
    >>> w.maybe_raise()
    Traceback (most recent call last):
    ...
    RuntimeError: demo thread failed: ZeroDivisionError('division by zero')
    """

    def __init__(self, *, name: str, stop_event: threading.Event | None = None,
                 work: Callable[[], object] | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self._work = work
        self.error: BaseException | None = None

    def work(self) -> None:
        if self._work is None:  # pragma: no cover - subclasses override work()
            raise NotImplementedError(f"{self.name}: pass work= or override work() (got neither)")
        self._work()

    def run(self) -> None:
        try:
            self.work()
        except BaseException as e:  # reported to the owner through maybe_raise()
            log.error("%s failed: %r", self.name, e)
            self.error = e

    def maybe_raise(self) -> None:
        """Re-raise this worker's error in the calling (owner) thread."""
        if self.error is not None:
            raise RuntimeError(f"{self.name} thread failed: {self.error!r}") from self.error

    def join_or_raise(self, timeout: float) -> None:
        """Join within ``timeout`` seconds or raise ``TimeoutError``."""
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"{self.name} thread did not stop within {timeout} s")
