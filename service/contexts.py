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
from typing import Any, NamedTuple

import numpy as np

from model.calibration import alert_counts, scene_verdict
from model.cuts import MAX_CHANGE, CutWindow
from model.window import DEFAULT_GAP
from service.errors import Conflict

Ready = list[tuple[int, np.ndarray]]  # (frame index in the stream, model input)


class OffsetMismatch(Conflict):
    code = "offset_mismatch"


class Pushed(NamedTuple):
    ready: Ready  # inputs now ready for scoring
    pending: int  # frames waiting for their look-ahead
    cuts: set[int]  # the ready frames that begin a clip after a scene cut
    seen: int  # frames of the stream so far: the offset of its next chunk
    undo: Callable[[], bool]  # puts the window back as it was before these frames; whether it could


@dataclass
class StreamContext:
    stream_id: str = ""
    window: CutWindow = field(default_factory=CutWindow)
    lock: threading.Lock = field(default_factory=threading.Lock)
    scored: int = 0  # frames of this stream scored so far (model.calibration.alert_counts)
    alerting: int = 0  # of which at or above the alert threshold
    taken: int = 0  # requests whose frames entered the window
    lost: bool = False  # a failed request's frames could not be put back (module docstring)

    def push(self, frames: np.ndarray, flush: bool, offset: int | None = None) -> Pushed:
        """A request's frames into the window (all of them ready when ``flush``). ``offset``, when given,
        must be the stream index of the first frame, i.e. the frames the stream has so far: a chunk
        sent twice, out of order or to an expired context is refused (OffsetMismatch) and changes
        nothing."""
        with self.lock:
            if self.lost:
                raise Conflict(f"stream_id {self.stream_id!r} lost the frames of a request that failed after a "
                               "later request of it had been taken; DELETE /v1/score/streams/"
                               f"{self.stream_id} (or use another stream_id) and send the clip again")
            if offset is not None and offset != self.window.seen:
                raise OffsetMismatch(
                    f"stream_id {self.stream_id!r} has {self.window.seen} frames, so its next chunk starts at offset "
                    f"{self.window.seen}, not {offset}" + ("" if self.window.seen else
                                                             " (a new context: the old one expired or was flushed)"),
                    headers={"X-Stream-Offset": str(self.window.seen)})
            before = self.window.copy()
            ready = self.window.push_many(frames)
            self.window.own()
            if flush:
                ready += self.window.flush()
            self.taken += 1
            taken = self.taken
            pushed = Pushed(ready, self.window.pending, self.window.take_cuts({t for t, _ in ready}),
                            self.window.seen, lambda: self._undo(taken, before))
        return pushed

    def _undo(self, taken: int, before: CutWindow) -> bool:
        """Put the window back as it was before request ``taken``; whether it could."""
        with self.lock:
            if self.taken != taken:  # a later request's frames sit after these: no going back
                self.lost = True
                return False
            self.window = before
            return True

    def tally(self, calibrated: list[float]) -> dict[str, Any]:
        """Count newly scored frames; the stream's model.calibration scene check so far."""
        scored, alerting = alert_counts(calibrated)
        with self.lock:
            self.scored += scored
            self.alerting += alerting
            return scene_verdict(self.scored, self.alerting)


class StreamContexts:
    def __init__(self, ttl_s: float, capacity: int, max_change: float = MAX_CHANGE, gap: int = DEFAULT_GAP) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self.max_change = max_change  # scene-cut line of new contexts
        self.gap = gap  # the model's context gap: the frames a context holds back
        self._items: OrderedDict[str, tuple[StreamContext, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, stream_id: str) -> StreamContext:
        """The stream's context (a new one for an unknown or expired id)."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            context, _ = self._items.pop(stream_id, (None, now))
            context = context or StreamContext(stream_id, CutWindow(self.max_change, gap=self.gap))
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
