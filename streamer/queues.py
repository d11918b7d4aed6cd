"""Bounded hand-off queues between the stream's stages, with the slow-consumer policies.

``latest`` (default): when the queue is full, the *oldest* frame is dropped to make room for the
new one and the drop is counted: the display stays live and every lost frame is reported.
``block``: the producer waits (in short, stop-aware slices) until there is room; with a PULL
socket this stops reading the socket, so ZeroMQ's high-water mark pushes back on the PUSH sender
and nothing is lost.

Markers (series start/end) are never dropped; they may exceed ``maxsize`` by the few there are.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Generic, Literal, TypeVar

__all__ = ["FrameQueue", "Policy"]

T = TypeVar("T")
Policy = Literal["latest", "block"]


class FrameQueue(Generic[T]):
    """A bounded queue with a drop-oldest or a blocking put.

    Examples
    --------
    >>> q = FrameQueue(maxsize=2, policy="latest")
    >>> [q.put(i) for i in range(3)]
    [None, None, 0]
    >>> q.get(timeout=0), q.get(timeout=0), q.get(timeout=0.01)
    (1, 2, None)
    """

    def __init__(self, *, maxsize: int, policy: Policy,
                 is_droppable: Any = lambda item: True) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1 (got {maxsize})")
        if policy not in ("latest", "block"):
            raise ValueError(f"policy must be 'latest' or 'block' (got {policy!r})")
        self.maxsize, self.policy = maxsize, policy
        self._droppable = is_droppable
        self._items: deque[T] = deque()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def _frames(self) -> int:
        return sum(1 for i in self._items if self._droppable(i))

    def put(self, item: T, *, timeout: float | None = None, marker: bool = False) -> T | None:
        """Add ``item``.

        ``latest``: returns the dropped oldest frame (or ``None``). ``block``: waits up to
        ``timeout`` seconds for room and raises ``TimeoutError`` when there is none (the caller
        checks its stop flag and tries again).
        """
        with self._cond:
            dropped = None
            if not marker and self._frames() >= self.maxsize:
                if self.policy == "latest":
                    for i, old in enumerate(self._items):
                        if self._droppable(old):
                            dropped = old
                            del self._items[i]
                            break
                else:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    while self._frames() >= self.maxsize:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise TimeoutError("queue full")
                        self._cond.wait(left)
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def get(self, *, timeout: float) -> T | None:
        """Take the oldest item, waiting at most ``timeout`` seconds (``None`` when empty)."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
                if not self._items:
                    return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def drain(self) -> list[T]:
        """Remove and return everything queued."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items
