"""Small per-camera helpers: frame-rate sampling, rate meters, the picture-validity check that keeps
frozen or covered cameras from raising events (the scene-cut check is model.cuts), when a camera
sheds load, and the pages of its recent scores that pollers read."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from model.window import DEFAULT_GAP


class Sampler:
    """Keeps frames at ``fps`` on the source's own clock (all frames when fps is None)."""

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self._next: float | None = None

    def reset(self) -> None:
        self._next = None

    def take(self, t: float) -> bool:
        if not self.period:
            return True
        if self._next is not None and t < self._next - 1e-6:
            return False
        # the next slot follows this one; after a long pause it restarts from now (no burst to catch up)
        self._next = t + self.period if self._next is None or t - self._next > self.period else self._next + self.period
        return True


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def _trim(self, now: float | None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        return now

    def tick(self, now: float | None = None) -> None:
        self._times.append(self._trim(now))

    def rate(self, now: float | None = None) -> float:
        now = self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / span if span > 0 else 0.0


class Validity:
    """Flags frames no event may come from: a frozen picture (the same frame for ``frozen_s``) and a
    blank one (covered, blacked out or saturated: almost no spatial variation)."""

    def __init__(self, frozen_s: float = 1.0, frozen_diff: float = 0.25, blank_std: float = 3.0) -> None:
        self.frozen_s, self.frozen_diff, self.blank_std = frozen_s, frozen_diff, blank_std
        self._previous: np.ndarray | None = None
        self._same_since: float | None = None

    def reset(self) -> None:
        self._previous, self._same_since = None, None

    def check(self, frame: np.ndarray, t: float) -> str | None:
        """None for a valid frame, else "frozen" or "blank". ``t`` is the source's clock in seconds.
        The statistics (mean absolute difference from the previous frame, standard deviation) are over
        every 4th pixel of every 4th row, all channels, computed by OpenCV, which releases the GIL: the
        same numbers as numpy's to rounding, at a third of a camera thread's GIL time
        (benchmarks/camera_path.py)."""
        sub = frame[::4, ::4]
        small = np.ascontiguousarray(sub).reshape(sub.shape[0], -1)  # uint8, one channel to OpenCV
        same = (self._previous is not None and self._previous.shape == small.shape
                and cv2.mean(cv2.absdiff(small, self._previous))[0] < self.frozen_diff)
        self._previous = small
        if not same:
            self._same_since = None
        elif self._same_since is None:
            self._same_since = t
        if cv2.meanStdDev(small)[1][0, 0] < self.blank_std:
            return "blank"
        if self._same_since is not None and t - self._same_since >= self.frozen_s:
            return "frozen"
        return None


class Shedding:
    """When a live camera sheds load: its frames are being superseded (the server is behind), so it keeps only every
    ``stride``-th frame, the model's context gap (3 unless its scoring says otherwise), whose scores need only kept
    frames (model.window.FrameWindow spacing = gap): each raw score it gives is the one it would give at full rate,
    and the camera threads' Python work, which is what starves an overloaded server's inference workers
    (benchmarks/RESULTS.md, session 24), falls by that stride. It goes back to every frame after ``hold_s`` (jittered
    +-20%, so that cameras that started shedding together do not all return at once) without a superseded frame; a
    camera that has to shed again within twice its hold holds twice as long next time, up to ``max_hold_s``."""

    def __init__(self, enabled: bool, hold_s: float = 10.0, max_hold_s: float = 300.0,
                 rng: random.Random | None = None, stride: int = DEFAULT_GAP) -> None:
        self.enabled, self.base_hold_s, self.max_hold_s = enabled, hold_s, max_hold_s
        self.shed_stride = stride  # frames it keeps one of while shedding
        self.hold_s = hold_s
        self.stride = 1
        self.entered = 0  # times it started shedding
        self._rng = rng or random.Random()
        self._pressure_at: float | None = None  # the latest superseded frame
        self._since: float | None = None  # when the current stride began
        self._jitter = 1.0

    def pressure(self, now: float) -> None:
        """A frame of this camera was superseded."""
        self._pressure_at = now

    def decide(self, now: float) -> int | None:
        """The stride to switch to now (1 or ``shed_stride``), or None to keep the current one."""
        if not self.enabled or self._pressure_at is None:
            return None
        if self.stride == 1:
            if self._since is not None and self._pressure_at <= self._since:
                return None  # superseded before the return to every frame: not new pressure
            if self._since is not None:  # back again: soon after returning, hold longer
                soon = now - self._since < 2 * self.hold_s
                self.hold_s = min(self.hold_s * 2, self.max_hold_s) if soon else self.base_hold_s
            self.stride, self._since, self.entered = self.shed_stride, now, self.entered + 1
            self._jitter = self._rng.uniform(0.8, 1.2)
            return self.stride
        assert self._since is not None  # set whenever the stride changes (a start at clock 0.0 is falsy: no `or`)
        if now - max(self._since, self._pressure_at) >= self.hold_s * self._jitter:
            self.stride, self._since = 1, now
            return 1
        return None


def page(history: Sequence[dict[str, Any]], seqs: tuple[int, int], after: int | None, since: float | None,
         limit: int) -> dict[str, Any]:
    """A camera's recent score records (``history``, oldest first; ``seqs``: the camera's first and
    newest seq, this life) as ``GET /v1/streams/{id}/scores`` answers: the newest ``limit``; or, for a
    poller, the first ``limit`` recorded after record ``after`` (its seq) or captured after ``since``
    (unix time), oldest first and final only (up to the first whose smoothed score and event still wait
    for their look-ahead), so paging loses none and sees each record once, complete; with how many
    after ``after`` are no longer kept (``missed``: the poller is ``stream_history`` behind). An
    ``after`` outside this life of the camera (0, or from before a restart) pages from its start."""
    first, newest = seqs
    if after is not None and not first <= after <= newest:
        after = first
    oldest = history[0]["seq"] if history else newest + 1
    if after is None and since is None:  # no cursor: the newest, final or not
        items = [dict(r) for r in list(history)[-limit:]]
    else:  # a poller's page
        items = []
        for r in history:
            if (after is None or r["seq"] > after) and (since is None or r["capture_time"] > since):
                if not r["final"] or len(items) == limit:
                    break
                items.append(dict(r))
    return {"scores": items, "missed": max(0, oldest - after - 1) if after is not None else 0,
            "next_after": items[-1]["seq"] if items else after if after is not None else newest,
            "next_since": items[-1]["capture_time"] if items else since}
