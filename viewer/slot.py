"""A one-slot "latest item" buffer shared by the network thread and the GUI thread.

The network thread overwrites the slot with every new frame; the GUI takes whatever is there when it
is ready to draw. A slow display therefore never slows the stream: it skips frames, and the slot
counts every frame that was overwritten before anyone took it (the viewer shows these as display
skips).
"""
from __future__ import annotations

import threading
from typing import Generic, TypeVar

__all__ = ["LatestSlot"]

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item; `put` replaces it, `take` empties it.

    Examples
    --------
    >>> slot = LatestSlot()
    >>> slot.put(1), slot.put(2)
    (False, True)
    >>> slot.take(), slot.take(), slot.overwritten
    (2, None, 1)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: T | None = None
        self._overwritten = 0

    def put(self, item: T) -> bool:
        """Store `item`; return True when it replaced one nobody had taken (a skip)."""
        with self._lock:
            replaced = self._item is not None
            if replaced:
                self._overwritten += 1
            self._item = item
            return replaced

    def take(self) -> T | None:
        """Return the latest item and empty the slot, or None when nothing new arrived."""
        with self._lock:
            item, self._item = self._item, None
            return item

    @property
    def overwritten(self) -> int:
        """How many items were replaced before they were taken."""
        with self._lock:
            return self._overwritten
