"""Scene cuts: consecutive frames whose pictures differ over most of their area (another camera or
preset switched in, a spliced file, a moved camera). Frame t is scored from frames t-3, t and t+3
(model.window), so a window across a cut would show the model two scenes at once; the service's
cameras, HTTP clips and `aedmae score` end the clip at a cut instead (numpy and OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

from model.window import FrameWindow

MAX_CHANGE = 0.1  # the default line between one scene and two (benchmarks/scene_cuts.py)


def small_gray(frame: np.ndarray) -> np.ndarray:
    """A frame (H, W, C) as float32 gray (the mean of its channels), shrunk (each pixel the mean of its
    area) by a whole factor to a shorter side of 20 pixels or more: the shipped model's 160x240 to
    20x30; smaller frames stay as they are. Shrinking first, on the uint8 frame, costs least."""
    h, w = frame.shape[:2]
    img = frame.reshape(h, w, -1)
    factor = max(1, min(h, w) // 20)
    if factor > 1:
        img = cv2.resize(img, (w // factor, h // factor), interpolation=cv2.INTER_AREA).reshape(h // factor,
                                                                                                w // factor, -1)
    return img[..., 0].astype(np.float32) if img.shape[2] == 1 else img.mean(axis=2, dtype=np.float32)


def picture_change(a: np.ndarray, b: np.ndarray) -> float | None:
    """How much of picture b differs from picture a (two :func:`small_gray` images): each picture is
    divided by its spread (:func:`spread`), and the change is the median absolute deviation of their
    difference. Exposure changes (gain and offset) cancel out; people moving change few pixels, so
    the median stays near 0; another scene changes most of them. Nothing here depends on where a
    two-toned picture's median falls. None when either picture is almost uniform."""
    return _change(a, spread(a), b, spread(b))


def _change(a: np.ndarray, sa: float | None, b: np.ndarray, sb: float | None) -> float | None:
    if sa is None or sb is None:
        return None
    d = (b / sb - a / sa).ravel()
    return _middle(np.abs(d - _middle(d)))


def _middle(x: np.ndarray) -> float:
    """The median (the upper of the two middle values of an even count), by one partial sort."""
    k = x.size // 2
    return float(np.partition(x, k)[k])


MIN_SPREAD = 32.0  # gray levels: a faint picture's codec noise is not divided into a large change (the
# price: on such a picture a change of exposure is not cancelled: halved, a generated one changed by 0.09)


def spread(x: np.ndarray) -> float | None:
    """The picture's interquartile range, at least MIN_SPREAD (real scenes spread wider: Ped2 and
    Avenue frames 91-119 levels); None when it is uniform."""
    n = x.size
    q1, q3 = np.partition(x.ravel(), [n // 4, (3 * n) // 4])[[n // 4, (3 * n) // 4]]  # one partial sort
    return max(float(q3 - q1), MIN_SPREAD) if q3 - q1 >= 1.0 else None


class CutDetector:
    """Notices a scene cut: a frame whose picture mostly differs from the previous sampled frame's
    (another camera or PTZ preset switched onto the stream, a file spliced from two scenes, a moved or
    tampered camera). A window of frames t-3..t+3 across it would show the model two scenes at once, so
    the camera ends its segment there, as at a gap (service.streams), and `aedmae score` scores the
    two sides as separate clips (model.scorevideo).

    :func:`picture_change` of consecutive frames of Ped2 and of the Avenue footage, at the shipped
    model's resolution, is at most 0.013 frame to frame and 0.020 a fifth or a whole second apart,
    0.046 between different Ped2 videos; a Ped2 frame against an Avenue frame at least 0.22
    (benchmarks/scene_cuts.py); the default line, 0.1, sits 5x above the second and 2.2x below the
    last. Two simpler measures failed on generated scenes: correlation, where a moving object carries
    most of a plain picture's variation (0.47 within one scene), and centring each picture on its
    median, which jumps in a two-toned picture when an object crosses from one tone to the other.
    Almost uniform pictures are left to the cameras' validity check (service.stream_parts.Validity).
    ``max_change`` 0 turns the check off."""

    def __init__(self, max_change: float = MAX_CHANGE) -> None:
        self.max_change = max_change
        self.last: float | None = None  # the latest frame's change from the one before it
        self._previous: tuple[np.ndarray, float | None] | None = None  # picture and spread: each computed once

    def reset(self) -> None:
        self._previous, self.last = None, None

    def check(self, frame: np.ndarray) -> float | None:
        """The change from the previous frame when it is a cut (above ``max_change``), else None."""
        small, previous = small_gray(frame), self._previous
        self._previous = (small, spread(small))
        same_size = previous is not None and previous[0].shape == small.shape
        self.last = _change(*previous, *self._previous) if previous is not None and same_size else None
        if not self.max_change or self.last is None or self.last <= self.max_change:
            return None
        return self.last


class CutWindow:
    """A :class:`model.window.FrameWindow` that starts afresh at every scene cut: ``push(frame)``
    returns the inputs that became ready, indexed over the whole stream, the frames before a cut with
    their window's end clamped there, as if their clip had ended. Without a cut it gives exactly what
    FrameWindow (and ``clip_windows``) give. ``cut_frames``: the frames that began a new clip."""

    def __init__(self, max_change: float = MAX_CHANGE) -> None:
        self.window = FrameWindow()
        self.detector = CutDetector(max_change)
        self.base = 0  # stream index of the current clip's first frame
        self.cut_frames: list[int] = []

    @property
    def seen(self) -> int:
        return self.base + self.window.seen

    @property
    def pending(self) -> int:
        return self.window.pending

    def push(self, frame: np.ndarray) -> list[tuple[int, np.ndarray]]:
        ready: list[tuple[int, np.ndarray]] = []
        if self.detector.check(frame) is not None:
            ready = self.flush()
            self.base += self.window.seen
            self.window = FrameWindow()
            self.cut_frames.append(self.base)
        return ready + [(self.base + t, x) for t, x in self.window.push(frame)]

    def flush(self) -> list[tuple[int, np.ndarray]]:
        return [(self.base + t, x) for t, x in self.window.flush()]
