"""Calibration: raw scores -> a calibrated score in (0, 1) an operator can read (numpy only).

Fitted on normal frames held out of the training videos:
    calibrated = sigmoid(slope * (score - threshold))
threshold = the ``quantile`` of normal scores (calibrated 0.5: "as unusual as the rarest normal
frames"), and the slope puts the median normal frame at 0.1. The mapping is strictly increasing,
so it never changes a ranking (AUC); 0 and 1 are its bounds, reached only far from normal.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import numpy as np

from model.errors import ConfigError

MEDIAN_CALIBRATED = 0.1  # where the median normal frame lands
ALERT = 0.5  # the alert line: a calibrated score at or above it is an alert (the threshold's raw score maps here)


@dataclass(frozen=True)
class Calibration:
    threshold: float  # raw score at calibrated 0.5
    slope: float  # logistic slope, 1 / raw-score units
    median: float  # median raw score of the normal frames
    quantile: float  # the threshold's quantile among normal frames
    normal_frames: int  # how many normal frames it was fitted on
    false_alarm_rate: float | None = None  # cross-validated fraction of normal frames above threshold

    def logit(self, score: Any) -> Any:
        """The calibrated score before its sigmoid: 0 at the threshold, linear in the raw score, unbounded."""
        return (score - self.threshold) * self.slope

    def apply(self, score: Any) -> Any:
        """Calibrated score of a numpy array or a torch tensor (same formula, both backends)."""
        z = self.logit(score)
        if isinstance(z, np.ndarray | float | int):
            return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))
        return (z).sigmoid()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """From :meth:`to_dict` output; extra keys (provenance notes) are ignored.

        Raises:
            ConfigError: not an object holding the numbers a calibration needs (a hand-edited file).
        """
        needed = [f.name for f in fields(cls) if f.default is MISSING]  # the fields without a default
        if not (isinstance(data, dict) and numbers([data.get(k) for k in needed])):
            raise ConfigError(f"the checkpoint's calibration must be an object with the numbers {', '.join(needed)}: "
                              "refit it (aedmae calibrate)")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def numbers(values: Any) -> bool:
    """Whether ``values`` is a list of numbers (JSON's; not booleans)."""
    return isinstance(values, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _fit(scores: np.ndarray, quantile: float) -> tuple[float, float, float]:
    threshold = float(np.quantile(scores, quantile))
    median = float(np.median(scores))
    spread = max(threshold - median, 1e-6 * max(abs(threshold), 1e-12), 1e-12)
    slope = math.log(1 / MEDIAN_CALIBRATED - 1) / spread
    return threshold, slope, median


def fit_calibration(scores: np.ndarray, quantile: float, groups: np.ndarray | None = None) -> Calibration:
    """Fit on normal frame scores; ``groups`` (e.g. video ids) enables a two-fold cross-validated
    false-alarm rate: fit on half of the groups, count alarms on the other half, and swap."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size < 2 or not np.all(np.isfinite(s)):
        raise ValueError(f"calibration needs at least 2 finite normal scores, got {s.size}")
    threshold, slope, median = _fit(s, quantile)
    far = None
    if groups is not None and len(np.unique(groups)) >= 2:
        ids = np.unique(groups)
        fold = np.isin(groups, ids[::2])
        rates = []
        for fit_on in (fold, ~fold):
            thr, _, _ = _fit(s[fit_on], quantile)
            rates.append(float((s[~fit_on] > thr).mean()))
        far = float(np.mean(rates))
    return Calibration(threshold, slope, median, quantile, int(s.size), far)


SCENE_CHECK_FRAMES = 100  # scored frames needed before footage is judged against its calibration
# Share of frames at or above the alert threshold past which footage does not fit the calibration (0.99
# until session 49: the session-6 model alerted on every Avenue frame; 0.8 in sessions 49-51: that model
# alerted on 84-92% of the first 300 frames of either Avenue video, its own scene's partly abnormal clips
# on 58-71%; since session 52 the shipped model alerts on 91.7% and 99.0% of Avenue's, 58.3% and 80.0% of
# the partly abnormal clips', so the line sits between the two, about 6 points from either).
SCENE_ALERT_SHARE = 0.86


def scene_check(calibrated: Any) -> dict[str, Any]:
    """Does this footage look like the scene the model was calibrated on?

    On normal footage of its own scene a few percent of frames reach the alert threshold (calibrated
    0.5; the shipped model: 1.6% of held-out training frames, cross-validated, 9% of Ped2's normal test
    frames, other people); on its Ped2 test videos, mostly abnormal (67-100% of their frames), 58-96%
    do (01 and 07, two-thirds and three-quarters abnormal: 58% and 80%). On footage of another scene
    (Avenue) 92-99% do: the model knows the one scene of its training footage. So when at least
    ``SCENE_ALERT_SHARE`` of ``SCENE_CHECK_FRAMES`` or more scored frames alert, the calibration does
    not fit this footage: it is abnormal throughout (Ped2's 03, 09 and 11: 91-96%; 05, 85%, does
    not warn), or, more likely, another scene. Returns the frames
    judged, their share at or above 0.5, and a warning with the remedy (None when the footage fits or
    is too short to tell). NaN scores (an uncalibrated model, frames not scored) are left out.
    """
    return scene_verdict(*alert_counts(calibrated))


def alert_counts(calibrated: Any) -> tuple[int, int]:
    """(frames, alerting): the finite calibrated scores, and those at or above the alert threshold 0.5."""
    c = np.asarray(calibrated, dtype=np.float64).ravel()
    c = c[np.isfinite(c)]
    return int(c.size), int((c >= ALERT).sum())


def scene_verdict(frames: int, alerting: int) -> dict[str, Any]:
    """:func:`scene_check` from :func:`alert_counts` (summed over a stream's requests, say)."""
    share = alerting / frames if frames else None
    warning = None
    if share is not None and frames >= SCENE_CHECK_FRAMES and share >= SCENE_ALERT_SHARE:
        warning = (f"{100 * share:.1f}% of {frames} frames are at or above the alert threshold (the calibration "
                   "expects a few percent on normal footage of its own scene): this footage is abnormal throughout or, "
                   "more likely, shows a scene the model was not trained on, and its scores mean little. Refit "
                   "the model's calibration on normal footage of this camera (aedmae calibrate --data "
                   "NORMAL_FOOTAGE --out DIR), or train a model on it (aedmae train).")
    return {"frames": frames, "alert_share": None if share is None else round(share, 4), "warning": warning}
