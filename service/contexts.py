"""Temporal context kept across requests per ``stream_id``, so a clip sent in chunks scores exactly
like the whole clip in one request (scene cuts included: model.cuts.CutWindow), and a tally of its
scores for the scene check. Idle contexts expire; the store is bounded (LRU)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from model.calibration import alert_counts, scene_verdict
from model.cuts import MAX_CHANGE, CutWindow


@dataclass
class StreamContext:
    window: CutWindow = field(default_factory=CutWindow)
    lock: threading.Lock = field(default_factory=threading.Lock)
    scored: int = 0  # frames of this stream scored so far (model.calibration.alert_counts)
    alerting: int = 0  # of which at or above the alert threshold

    def tally(self, calibrated: list[float]) -> dict[str, Any]:
        """Count newly scored frames; the stream's model.calibration scene check so far."""
        scored, alerting = alert_counts(calibrated)
        with self.lock:
            self.scored += scored
            self.alerting += alerting
            return scene_verdict(self.scored, self.alerting)


class StreamContexts:
    def __init__(self, ttl_s: float, capacity: int, max_change: float = MAX_CHANGE) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self.max_change = max_change  # scene-cut line of new contexts
        self._items: OrderedDict[str, tuple[StreamContext, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, stream_id: str) -> StreamContext:
        """The stream's context (a new one for an unknown or expired id)."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            context, _ = self._items.pop(stream_id, (None, now))
            context = context or StreamContext(CutWindow(self.max_change))
            self._items[stream_id] = (context, now)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return context

    def drop(self, stream_id: str) -> bool:
        with self._lock:
            return self._items.pop(stream_id, None) is not None

    def _expire(self, now: float) -> None:
        for key in [k for k, (_, seen) in self._items.items() if now - seen > self.ttl_s]:
            del self._items[key]
