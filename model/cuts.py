"""Scene cuts: consecutive frames whose pictures differ over most of their area (another camera or
preset switched in, a spliced file, a moved camera). Frame t is scored from frames t-g, t and t+g
(model.window, g = model.scoring.context_gap), so a window across a cut would show the model two
scenes at once; the service's cameras, HTTP clips and `aedmae score` end the clip at a cut instead
(numpy and OpenCV only)."""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np

from model.window import DEFAULT_GAP, FrameWindow

MAX_CHANGE = 0.1  # the default line between one scene and two (benchmarks/scene_cuts.py)
CHANGE_LIMIT = 10.0  # the highest line one may set: above any change (255 levels over a spread of 32 or more: < 8)
SHORT_SIDE = 20  # pixels: the pictures compared are this small (600 pixels at 2:3), which is enough for a median


def small_gray(frames: np.ndarray) -> np.ndarray:
    """Frames (N, H, W, C) as float32 gray (the mean of their channels), shrunk (each pixel the mean of
    its area) to a shorter side of SHORT_SIDE pixels, flattened: (N, pixels). The shipped model's
    160x240 becomes 20x30, the test models' 32x48 too; smaller frames stay as they are. Shrinking
    first, on the uint8 frames, costs least."""
    n, h, w = frames.shape[:3]
    imgs = frames.reshape(n, h, w, -1)
    if min(h, w) > SHORT_SIDE:
        size = (max(1, round(w * SHORT_SIDE / min(h, w))), max(1, round(h * SHORT_SIDE / min(h, w))))
        if n == 1:  # a camera's frame: np.stack of one picture took as long as its resize
            imgs = cv2.resize(imgs[0], size, interpolation=cv2.INTER_AREA).reshape(1, size[1], size[0], -1)
        else:
            imgs = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
                             for f in imgs])
    gray = imgs[..., 0].astype(np.float32) if imgs.shape[3] == 1 else imgs.mean(axis=3, dtype=np.float32)
    return gray.reshape(n, -1)


MIN_SPREAD = 32.0  # gray levels: a faint picture's codec noise is not divided into a large change (the
# price: on such a picture a change of exposure is not cancelled: halved, a generated one changed by 0.06)


def spreads(small: np.ndarray) -> np.ndarray:
    """Each picture's interquartile range, at least MIN_SPREAD (real scenes spread wider: Ped2 and
    Avenue frames 91-119 levels); NaN for an almost uniform picture. Quantiles and medians here come
    from a full sort, not a partial one: the same values, but numpy sorts a row of 600 floats with SIMD,
    faster than its partition on real frames (the check took half the time: RESULTS.md, "Scene cuts")."""
    k1, k3 = small.shape[1] // 4, (3 * small.shape[1]) // 4
    q = np.sort(small, axis=1)
    iqr = q[:, k3] - q[:, k1]
    spread = np.maximum(iqr, MIN_SPREAD)
    spread[iqr < 1.0] = np.nan
    return spread


def normalised(small: np.ndarray) -> np.ndarray:
    """Each picture (a row of :func:`small_gray`) divided by its spread: a row of NaN for an almost
    uniform picture."""
    return small / spreads(small)[:, None]


def deviations(d: np.ndarray) -> np.ndarray:
    """The median absolute deviation of each row of d (differences of normalised pictures)."""
    k = d.shape[1] // 2  # medians: the upper of the two middle values
    middle = np.sort(d, axis=1)[:, k]
    return np.sort(np.abs(d - middle[:, None]), axis=1)[:, k]


def picture_change(a: np.ndarray, b: np.ndarray) -> float | None:
    """How much of frame b differs from frame a (two (H, W, C) frames): each picture (:func:`small_gray`)
    is divided by its spread (:func:`spreads`), and the change is the median absolute deviation of
    their difference. Exposure changes (gain and offset) cancel out; people moving change few pixels,
    so the median stays near 0; another scene changes most of them. Nothing here depends on where a
    two-toned picture's median falls. None when either picture is almost uniform."""
    pictures = normalised(small_gray(np.stack([a, b])))
    c = float(deviations(pictures[1:] - pictures[:1])[0])
    return None if np.isnan(c) else c


class CutDetector:
    """Notices a scene cut: a frame whose picture mostly differs from the previous sampled frame's
    (another camera or PTZ preset switched onto the stream, a file spliced from two scenes, a moved or
    tampered camera). A window of frames t-g..t+g across it would show the model two scenes at once, so
    the camera ends its segment there, as at a gap (service.streams), and HTTP clips and `aedmae
    score` score the two sides as separate clips (:class:`CutWindow`).

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
        self._previous: np.ndarray | None = None  # the latest picture, normalised: (1, pixels)

    def check(self, frame: np.ndarray) -> float | None:
        """The change from the previous frame when it is a cut (above ``max_change``), else None."""
        return self.check_many(frame[None])[0]

    def check_many(self, frames: np.ndarray) -> list[float | None]:
        """:meth:`check` for consecutive frames (N, H, W, C) at once: a few array operations for the
        lot (an HTTP request's frames), not a few per frame."""
        if len(frames) == 0:
            return []
        pictures = normalised(small_gray(frames))  # each frame's picture is normalised once, and kept
        previous, self._previous = self._previous, pictures[-1:]
        if previous is not None and previous.shape[1] == pictures.shape[1]:
            values = deviations(pictures - np.concatenate([previous, pictures[:-1]])).tolist()
        else:  # nothing to compare the first frame with
            values = [np.nan, *deviations(pictures[1:] - pictures[:-1]).tolist()]
        found: list[float | None] = [None if math.isnan(v) else v for v in values]
        self.last = found[-1]
        return [v if self.max_change and v is not None and v > self.max_change else None for v in found]


class CutWindow:
    """A :class:`model.window.FrameWindow` that starts afresh at every scene cut: ``push(frame)``
    returns the inputs that became ready, indexed over the whole stream, the frames before a cut with
    their window's end clamped there, as if their clip had ended. Without a cut it gives exactly what
    FrameWindow (and ``clip_windows``) give. ``cut_frames``: the frames that began a new clip."""

    def __init__(self, max_change: float = MAX_CHANGE, spacing: int = 1, gap: int = DEFAULT_GAP) -> None:
        # spacing: frames pushed are every spacing-th of the source; gap: model.scoring.context_gap
        self.window = FrameWindow(spacing, gap)
        self.detector = CutDetector(max_change)
        self.base = 0  # stream index of the current clip's first frame
        self.cut_frames: list[int] = []

    @property
    def seen(self) -> int:
        return self.base + self.window.seen

    @property
    def pending(self) -> int:
        return self.window.pending

    def copy(self) -> CutWindow:
        """An independent copy, to go back to: a request that fails leaves its stream as it was."""
        other = copy.copy(self)
        other.window, other.detector = self.window.copy(), copy.copy(self.detector)
        other.cut_frames = [*self.cut_frames]
        return other

    def push(self, frame: np.ndarray) -> list[tuple[int, np.ndarray]]:
        return self.push_many(frame[None])

    def push_many(self, frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """:meth:`push` for consecutive frames (N, H, W, C), the cut check done for all of them at once."""
        ready: list[tuple[int, np.ndarray]] = []
        for frame, cut in zip(frames, self.detector.check_many(frames), strict=True):
            if cut is not None:
                ready += self.flush()
                self.base += self.window.seen
                self.window = FrameWindow(self.window.spacing, self.window.gap)
                self.cut_frames.append(self.base)
            ready += [(self.base + t, x) for t, x in self.window.push(frame)]
        return ready

    def own(self) -> None:
        """model.window.FrameWindow.own: for a window kept between requests (a stream_id's context keeps
        2 x gap + 1 frames, 0.3 MB at 160x240 with the gap of 3, not the 256-frame request they came in)."""
        self.window.own()

    def flush(self) -> list[tuple[int, np.ndarray]]:
        return [(self.base + t, x) for t, x in self.window.flush()]

    def take_cuts(self, indices: set[int]) -> set[int]:
        """The cut frames among ``indices`` (frames just returned), forgotten from ``cut_frames`` so that
        a long-lived stream's list holds only cuts not yet answered."""
        taken = indices.intersection(self.cut_frames)
        self.cut_frames = [t for t in self.cut_frames if t not in taken]
        return taken
