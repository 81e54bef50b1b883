"""Temporal context kept across requests per ``stream_id``, so a clip sent in chunks scores exactly
like the whole clip in one request. Idle contexts expire; the store is bounded (LRU)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from model.window import FrameWindow


class StreamContexts:
    def __init__(self, ttl_s: float, capacity: int) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[FrameWindow, float, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, stream_id: str) -> tuple[FrameWindow, threading.Lock]:
        """The stream's window (a new one for an unknown or expired id) and its lock."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            window, _, lock = self._items.pop(stream_id, (FrameWindow(), now, threading.Lock()))
            self._items[stream_id] = (window, now, lock)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return window, lock

    def drop(self, stream_id: str) -> bool:
        with self._lock:
            return self._items.pop(stream_id, None) is not None

    def _expire(self, now: float) -> None:
        for key in [k for k, (_, seen, _) in self._items.items() if now - seen > self.ttl_s]:
            del self._items[key]
