"""A one-slot mailbox between threads: the newest item wins, and every item overwritten unread is counted.

Real-time stages never queue: a slow consumer sees the latest frame, not a growing backlog, and the drop count
says how often that happened.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self._poked = False
        self.dropped = 0

    def put(self, item: T) -> None:
        """Leave `item` for the consumer, replacing (and counting) one it has not taken yet."""
        with self._ready:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._ready.notify()

    def get(self, timeout: float) -> T | None:
        """The newest item, waiting up to `timeout` s; None on time-out, on a poke, or once closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._item is not None or self._closed or self._poked, timeout)
            item, self._item, self._poked = self._item, None, False
            return item

    def poke(self) -> None:
        """Wake a waiting consumer without an item (something else it watches changed)."""
        with self._ready:
            self._poked = True
            self._ready.notify()

    def close(self) -> None:
        """Wake any waiting consumer for shutdown."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
