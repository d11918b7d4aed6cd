"""A worker thread that reports its error to its owner instead of dying silently."""
from __future__ import annotations

import logging
import threading

__all__ = ["Worker"]

log = logging.getLogger("n2a.stream")


class Worker(threading.Thread):
    """Runs ``self.work()``; an exception is stored in :attr:`error` and sets ``failed``.

    The owner calls :meth:`maybe_raise` every tick. Workers loop with short timeouts and check
    their stop event, so :meth:`stop` with a deadline always returns or raises ``TimeoutError``.
    """

    def __init__(self, *, name: str, stop_event: threading.Event, failed: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.stop_event = stop_event
        self.failed = failed
        self.error: BaseException | None = None

    def work(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self) -> None:
        try:
            self.work()
        except BaseException as e:  # reported to the owner, which stops the stream
            log.error("%s failed: %r", self.name, e)
            self.error = e
            self.failed.set()

    def maybe_raise(self) -> None:
        """Re-raise this worker's error in the calling (owner) thread."""
        if self.error is not None:
            raise RuntimeError(f"{self.name} thread failed: {self.error!r}") from self.error

    def join_or_raise(self, timeout: float) -> None:
        """Join within ``timeout`` seconds or raise ``TimeoutError``."""
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"{self.name} thread did not stop within {timeout} s")
