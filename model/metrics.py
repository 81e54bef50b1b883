"""Frame-level metrics and temporal smoothing (numpy only: the service imports the smoothers).

AUCs follow the field's protocol (METHOD.md): micro AUC pools every test frame into one ROC; macro
AUC is the mean of per-video AUCs over videos that have both classes, without the reference code's
fake-label padding (single-class videos are skipped and listed).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    n = len(values)
    while start < n:
        end = start
        while end + 1 < n and sorted_vals[end + 1] == sorted_vals[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half). NaN for a single class."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = _ranks(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds), thresholds descending."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    tpr = np.r_[0.0, tp / max(1, y.sum())]
    fpr = np.r_[0.0, fp / max(1, (~y).sum())]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def smoothing_radius(sigma: float) -> int:
    """How many frames either side the Gaussian smoothers reach (3 sigma; 0 without smoothing)."""
    return int(np.ceil(3 * sigma)) if sigma > 0 else 0


def gaussian_smooth(scores: np.ndarray, sigma: float) -> np.ndarray:
    """Offline, centred Gaussian smoothing that repeats the edge values (no zero padding, which would
    lower scores at video ends and reward a constant score; see METHOD.md). sigma in frames."""
    x = np.asarray(scores, dtype=np.float64)
    if sigma <= 0 or len(x) < 2:
        return x.copy()
    radius = smoothing_radius(sigma)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(x, radius, mode="edge")
    return np.convolve(padded, k, mode="valid")


REFERENCE_SIGMA = 282.0  # frames: the published reference code's evaluation for every dataset but Avenue
REFERENCE_HALF_WIDTH = 449  # its filter reaches this many frames either side, zero-padded


def reference_postprocess(scores: np.ndarray, sigma: float = REFERENCE_SIGMA,
                          half_width: int = REFERENCE_HALF_WIDTH) -> np.ndarray:
    """The post-processing behind the reference code's reported non-Avenue AUCs, for comparison only:
    a Gaussian over +-half_width frames with ZERO padding (its centre one frame early, as there), then
    min-max normalisation of each video to [0, 1]. Offline and non-causal (it needs the whole video), and
    it rewards anomalies in the middle of videos: a constant score is turned into a bump peaking at the
    centre, which scores well above 0.5 on Ped2 (METHOD.md). We never report it without that baseline."""
    x = np.asarray(scores, dtype=np.float64)
    offsets = np.arange(-half_width, half_width + 1)
    kernel = np.exp(-0.5 * ((offsets + 1) / sigma) ** 2)
    smoothed = np.correlate(np.pad(x, half_width), kernel, mode="valid")
    span = smoothed.max() - smoothed.min() if len(smoothed) else 0.0
    return (smoothed - smoothed.min()) / span if span > 0 else np.zeros_like(smoothed)


SMOOTHING_SIGMA_S = 0.2  # the service's default smoothing sigma (events.smoothing_sigma_s), seconds


class OnlineSmoother:
    """The service's smoothing, one value at a time: a Gaussian over the past 3*sigma frames and the
    next ``delay`` ones, so frame t's smoothed value is known once frame t+delay has been pushed.

    ``delay`` = 0 is a causal half-Gaussian (no wait, but it lags and flattens onsets); ``delay`` =
    None (or anything >= 3*sigma) waits for the whole window and is :func:`gaussian_smooth` exactly,
    edges repeated at both ends (``flush`` repeats the last value for the frames still waiting)."""

    def __init__(self, sigma: float, delay: int | None = None) -> None:
        self.sigma = sigma
        self.radius = smoothing_radius(sigma)
        self.delay = self.radius if delay is None else min(max(0, int(delay)), self.radius)
        offsets = np.arange(-self.radius, self.delay + 1)
        k = np.exp(-0.5 * (offsets / sigma) ** 2) if sigma > 0 else np.ones(1)
        self.kernel = k / k.sum()  # kernel[i] weighs the value offsets[i] frames from the one emitted
        self._window: list[float] = []  # values from radius frames before the next frame out, onwards

    @classmethod
    def in_seconds(cls, sigma_s: float, delay_s: float | None, rate: float) -> OnlineSmoother:
        """The smoother for ``rate`` frames a second, sigma and delay given in seconds (a camera's
        ``events.smoothing_sigma_s`` and ``smoothing_delay_s``; ``aedmae score`` at the footage's rate)."""
        return cls(sigma_s * rate, None if delay_s is None else round(delay_s * rate))

    def reset(self) -> None:
        self._window.clear()

    @property
    def waiting(self) -> int:
        """Frames pushed whose smoothed value has not come out yet."""
        return max(0, len(self._window) - self.radius)

    def push(self, score: float) -> list[float]:
        """Add the next frame's score; returns the smoothed values now final, oldest first (one per
        push once ``delay`` frames are waiting; none before)."""
        if not self._window:  # warm start: the first value stands for the frames before it (edge repeat)
            self._window = [score] * self.radius
        self._window.append(score)
        return self._drain()

    def flush(self) -> list[float]:
        """The end of the stream: the waiting frames' values, the last score repeated past the end."""
        if self.waiting:
            self._window += [self._window[-1]] * self.delay
        out = self._drain()
        self.reset()
        return out

    def _drain(self) -> list[float]:
        out = []
        while len(self._window) >= len(self.kernel) and self.waiting:
            out.append(float(np.dot(self.kernel, self._window[: len(self.kernel)])))
            del self._window[0]
        return out

    def smooth(self, scores: np.ndarray) -> np.ndarray:
        self.reset()
        out = [v for s in scores for v in self.push(float(s))] + self.flush()
        return np.array(out)


class InOrderSmoothing:
    """Frames in, ``(item, smoothed score)`` out in the same order, each once its smoothed value is
    final (``delay`` frames later with OnlineSmoother's look-ahead): what a camera and `aedmae score`
    hold while they wait. Invalid frames (score None) skip the smoother, come out with None and keep
    their place behind the frames before them."""

    def __init__(self, smoother: OnlineSmoother) -> None:
        self.smoother = smoother
        self._queue: deque[tuple[Any, bool]] = deque()

    def push(self, item: Any, score: float | None) -> list[tuple[Any, float | None]]:
        self._queue.append((item, score is not None))
        return self._release(self.smoother.push(score) if score is not None else [])

    def flush(self) -> list[tuple[Any, float | None]]:
        """The end of a segment: every waiting frame, the last score repeated past the end."""
        return self._release(self.smoother.flush())

    def _release(self, values: list[float]) -> list[tuple[Any, float | None]]:
        out: list[tuple[Any, float | None]] = []
        it = iter(values)
        while self._queue:
            item, valid = self._queue[0]
            if valid:
                value = next(it, None)
                if value is None:
                    break
                out.append((item, value))
            else:
                out.append((item, None))
            self._queue.popleft()
        return out


@dataclass(frozen=True)
class Detection:
    precision: float
    recall: float
    f1: float
    false_alarm_rate: float


def detection_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> Detection:
    """Precision, recall, F1 and false-alarm rate of ``scores >= threshold``."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    negatives = int((~y).sum())
    return Detection(precision, recall, f1, fp / negatives if negatives else 0.0)


def summarize(
    per_video: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, object]:
    """Micro AUC, macro AUC (two-class videos only) and per-video AUC from {video: (labels, scores)}."""
    labels = np.concatenate([v[0] for v in per_video.values()])
    scores = np.concatenate([v[1] for v in per_video.values()])
    aucs = {name: roc_auc(y, s) for name, (y, s) in per_video.items()}
    two_class = {k: v for k, v in aucs.items() if not np.isnan(v)}
    return {
        "micro_auc": roc_auc(labels, scores),
        "macro_auc": float(np.mean(list(two_class.values()))) if two_class else float("nan"),
        "per_video_auc": {k: (None if np.isnan(v) else v) for k, v in aucs.items()},
        "single_class_videos": sorted(set(aucs) - set(two_class)),
    }
