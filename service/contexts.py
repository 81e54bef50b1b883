"""Temporal context kept across requests per ``stream_id``, so a clip sent in chunks scores exactly
like the whole clip in one request (scene cuts included: model.cuts.CutWindow), and a tally of its
scores for the scene check. Idle contexts expire; the store is bounded (LRU).

A request whose frames entered the context and then failed (refused with 429, past its deadline, a
failed batch, the client gone) puts the context back as it was, so that sending the same frames again
scores them as one request would have. That is possible while no later request of the stream has been
taken meanwhile; otherwise (concurrent requests on one stream_id) the failed frames cannot be scored in
their place any more, and the context answers 409 until it is deleted or expires."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.calibration import alert_counts, scene_verdict
from model.cuts import MAX_CHANGE, CutWindow
from service.errors import Conflict

Ready = list[tuple[int, np.ndarray]]  # (frame index in the stream, model input)


@dataclass
class StreamContext:
    stream_id: str = ""
    window: CutWindow = field(default_factory=CutWindow)
    lock: threading.Lock = field(default_factory=threading.Lock)
    scored: int = 0  # frames of this stream scored so far (model.calibration.alert_counts)
    alerting: int = 0  # of which at or above the alert threshold
    taken: int = 0  # requests whose frames entered the window
    lost: bool = False  # a failed request's frames could not be put back (module docstring)

    def push(self, frames: np.ndarray, flush: bool) -> tuple[Ready, int, set[int], Callable[[], bool]]:
        """A request's frames into the window: the inputs now ready (all of them when ``flush``), how
        many frames wait for their look-ahead, the scene-cut frames among the ready ones, and ``undo``,
        which puts the window back as it was before these frames and says whether it could."""
        with self.lock:
            if self.lost:
                raise Conflict(f"stream_id {self.stream_id!r} lost the frames of a request that failed after a "
                               "later request of it had been taken; DELETE /v1/score/streams/"
                               f"{self.stream_id} (or use another stream_id) and send the clip again")
            before = self.window.copy()
            ready = self.window.push_many(frames)
            if flush:
                ready += self.window.flush()
            pending = self.window.pending
            cuts = self.window.take_cuts({t for t, _ in ready})
            self.taken += 1
            taken = self.taken

        def undo() -> bool:
            with self.lock:
                if self.taken != taken:  # a later request's frames sit after these: no going back
                    self.lost = True
                    return False
                self.window = before
                return True

        return ready, pending, cuts, undo

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
            context = context or StreamContext(stream_id, CutWindow(self.max_change))
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
