"""Temporal context: the model scores frame t from frames t-g, t and t+g, g being the window's gap
(``model.scoring.context_gap``, 3 by default, the paper's; training reads the same window). Numpy only; the
service's HTTP clips and camera streams use the same code.

At the edges of a clip the indices are clamped (frame 0 stands in for frames -g..-1). A live stream
therefore scores frame t only when frame t+g has arrived: a look-ahead of g frames.
"""

from __future__ import annotations

import copy
from collections import deque

import numpy as np

DEFAULT_GAP = 3  # the paper's window, t-3, t, t+3 (model.scoring.context_gap's default)


def context_offsets(gap: int = DEFAULT_GAP) -> tuple[int, int, int]:
    """The window's frames relative to t: (-gap, 0, gap)."""
    if gap < 1:
        raise ValueError(f"the context gap must be 1 or more, not {gap}")
    return (-gap, 0, gap)


def context_indices(num_frames: int, centres: np.ndarray, gap: int = DEFAULT_GAP) -> np.ndarray:
    """(len(centres), 3) frame indices t-gap, t, t+gap, clamped to [0, num_frames - 1]."""
    c = np.asarray(centres).reshape(-1, 1)
    return np.clip(c + np.asarray(context_offsets(gap)).reshape(1, -1), 0, num_frames - 1)


def clip_windows(frames: np.ndarray, centres: np.ndarray, gap: int = DEFAULT_GAP) -> np.ndarray:
    """(B, 3, H, W, C) uint8 model inputs for the given centre frames of a clip (N, H, W, C)."""
    return np.asarray(frames)[context_indices(len(frames), centres, gap)]


class FrameWindow:
    """Streaming version of :func:`clip_windows` for one source.

    ``push(frame)`` returns the inputs that became ready: frame t is ready once frame t+gap arrived.
    ``flush()`` returns the rest with the end clamped, as if the clip ended. Pushing frames one by
    one (or in chunks) and flushing gives exactly the inputs :func:`clip_windows` gives for the
    whole clip.

    ``spacing`` = gap: the frames pushed are every gap-th frame of the source (a camera shedding load,
    service.streams), so a frame's inputs are the kept frames next to it, which are the source's t-gap
    and t+gap: away from the edges, the inputs the full-rate window gives the same frame (any divisor
    of the gap works the same way).
    """

    def __init__(self, spacing: int = 1, gap: int = DEFAULT_GAP) -> None:
        offsets = context_offsets(gap)
        if spacing < 1 or gap % spacing:
            raise ValueError(f"spacing must divide the context gap {gap}, not {spacing}")
        self.spacing, self.gap = spacing, gap
        self._offsets = tuple(o // spacing for o in offsets)
        self._lookahead = max(self._offsets)
        self._frames: deque[np.ndarray] = deque(maxlen=self._lookahead - min(self._offsets) + 1)
        self._next = 0  # index of the next frame to score
        self._seen = 0  # frames pushed so far

    @property
    def seen(self) -> int:
        """Frames pushed so far (the index the next frame will get)."""
        return self._seen

    @property
    def pending(self) -> int:
        """Frames pushed but not yet returned (waiting for their look-ahead)."""
        return self._seen - self._next

    def _window(self, t: int, last: int) -> np.ndarray:
        first = self._seen - len(self._frames)  # index of the oldest buffered frame
        idx = [min(max(t + o, 0), last) - first for o in self._offsets]
        return np.stack([self._frames[i] for i in idx])

    def own(self) -> None:
        """Copy the buffered frames that are views into a larger array (the frames of one request), so
        that a window kept between requests holds its few frames alive, not every request they came in."""
        self._frames = deque((f.copy() if f.base is not None else f for f in self._frames), maxlen=self._frames.maxlen)

    def copy(self) -> FrameWindow:
        """An independent copy, to go back to (the frames are shared: nothing writes into them)."""
        other = copy.copy(self)
        other._frames = deque(self._frames, maxlen=self._frames.maxlen)
        return other

    def push(self, frame: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add the next frame; returns [(t, (3, H, W, C) input)] for frames now ready."""
        self._frames.append(frame)
        self._seen += 1
        ready = []
        while self._next + self._lookahead <= self._seen - 1:
            ready.append((self._next, self._window(self._next, self._seen - 1)))
            self._next += 1
        return ready

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """Inputs for the frames still waiting for their look-ahead, with the end clamped."""
        ready = []
        while self._next < self._seen:
            ready.append((self._next, self._window(self._next, self._seen - 1)))
            self._next += 1
        return ready
