import numpy as np
import pytest

from model.calibration import SCENE_CHECK_FRAMES, fit_calibration, scene_check
from model.metrics import (
    InOrderSmoothing,
    OnlineSmoother,
    detection_at,
    gaussian_smooth,
    reference_postprocess,
    roc_auc,
    roc_curve,
    summarize,
)


def test_auc_hand_checked():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    # pairs (pos, neg): (0.35 > 0.1), (0.35 > 0.4 no), (0.8 > both) -> 3 of 4
    assert roc_auc([0, 1, 0, 1], [0.1, 0.35, 0.4, 0.8]) == 0.75


def test_auc_ties_count_half():
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    # one tie among 2x2 pairs: (1, 0.5 vs 0.5) counts 0.5; others: 1 > 0.5 twice, 0.5 > 0 once -> 3.5/4
    assert roc_auc([0, 0, 1, 1], [0.0, 0.5, 0.5, 1.0]) == pytest.approx(0.875)


def test_auc_single_class_and_length_mismatch():
    assert np.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1], [0.1])


def test_roc_curve_endpoints_and_area():
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.9, 0.3, 0.3, 0.7, 0.2])
    fpr, tpr, thr = roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s))
    assert np.all(np.diff(thr[1:]) < 0)


def test_roc_curve_by_hand_with_more_negatives_than_positives():
    # descending: 0.9 (abnormal), 0.6 (normal), 0.5 (abnormal), 0.2, 0.1 (normal): each step by hand
    fpr, tpr, thr = roc_curve(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.6, 0.5, 0.9]))
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.6, 0.5, 0.2, 0.1])


def test_summary_skips_single_class_videos_without_padding():
    per_video = {
        "a": (np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])),  # AUC 1
        "b": (np.array([0, 1, 0, 1]), np.array([0.1, 0.35, 0.4, 0.8])),  # AUC 0.75
        "c": (np.array([1, 1]), np.array([0.0, 0.0])),  # single class: skipped, listed
    }
    s = summarize(per_video)
    assert s["macro_auc"] == pytest.approx(0.875)
    assert s["single_class_videos"] == ["c"] and s["per_video_auc"]["c"] is None
    assert s["micro_auc"] == pytest.approx(roc_auc([0, 0, 1, 1, 0, 1, 0, 1, 1, 1],
                                                   [0.1, 0.2, 0.3, 0.4, 0.1, 0.35, 0.4, 0.8, 0, 0]))


def test_gaussian_smoothing_repeats_edges():
    const = np.full(20, 3.0)
    assert np.allclose(gaussian_smooth(const, 4), 3.0), "a constant stays constant at the ends (no zero padding)"
    step = np.r_[np.zeros(10), np.ones(10)]
    sm = gaussian_smooth(step, 2)
    assert sm[0] == pytest.approx(0) and sm[-1] == pytest.approx(1) and 0.4 < sm[10] < 0.7
    assert np.array_equal(gaussian_smooth(step, 0), step)


def test_reference_postprocess_by_hand():
    # sigma 1, reach 1: out[i] = sum over n in {i-1, i, i+1} of x[n] * exp(-(n - i + 1) ** 2 / 2), zeros
    # outside the video, then min-max; by hand for x = [1, 2, 4]:
    x = np.array([1.0, 2.0, 4.0])
    g = lambda d: np.exp(-0.5 * (d + 1) ** 2)  # noqa: E731  offset d = n - i, centred one frame early
    raw = [x[0] * g(0) + x[1] * g(1), x[0] * g(-1) + x[1] * g(0) + x[2] * g(1), x[1] * g(-1) + x[2] * g(0)]
    want = (np.array(raw) - min(raw)) / (max(raw) - min(raw))
    assert reference_postprocess(x, sigma=1.0, half_width=1) == pytest.approx(want)
    assert np.array_equal(reference_postprocess(np.array([5.0])), [0.0]), "one frame: no span, zeros"


def test_reference_postprocess_rewards_a_constant_score_in_mid_video_anomalies():
    """Why it is only ever reported beside a constant baseline: zero padding turns a constant into a
    bump that peaks mid-video, and min-max stretches it to [0, 1]."""
    labels = np.r_[np.zeros(60), np.ones(60), np.zeros(60)]
    const = np.ones(180)
    assert roc_auc(labels, const) == pytest.approx(0.5)
    assert roc_auc(labels, reference_postprocess(const)) > 0.99  # not 1: its bump peaks a frame early
    assert roc_auc(labels, gaussian_smooth(const, 3)) == pytest.approx(0.5), "edge-repeating smoothing does not"


def test_causal_smoother_uses_only_the_past():
    x = np.r_[np.zeros(10), np.ones(10)]
    online = OnlineSmoother(2, delay=0).smooth(x)
    assert np.all(online[:10] == 0), "nothing before the step may know about it"
    assert 0 < online[10] < 1 and online[-1] == pytest.approx(1, abs=1e-3)
    s = OnlineSmoother(2, delay=0)
    assert [v for x_t in x for v in s.push(x_t)] == pytest.approx(list(online)), "one value out per push"


@pytest.mark.parametrize("sigma", [0.0, 0.4, 2.0, 3.0])
def test_online_smoother_with_the_whole_window_is_the_offline_smoothing(sigma):
    x = np.random.default_rng(0).random(40)
    assert np.allclose(OnlineSmoother(sigma).smooth(x), gaussian_smooth(x, sigma), atol=1e-12)
    assert np.allclose(OnlineSmoother(sigma).smooth(x[:1]), x[:1])


def test_online_smoother_waits_delay_frames_and_sees_no_further():
    x = np.r_[np.zeros(10), np.ones(10)]
    s = OnlineSmoother(2, delay=3)  # radius 6
    out = [s.push(v) for v in x]
    assert out[:3] == [[], [], []] and all(len(o) == 1 for o in out[3:]), "frame t comes out with frame t+3"
    assert s.waiting == 3
    values = [v for o in out for v in o] + s.flush()
    assert len(values) == len(x) and s.waiting == 0
    assert np.all(np.array(values[:7]) == 0), "frame t knows frames up to t+3, no further"
    assert 0 < values[7] < values[9] < values[10] < 1
    assert values == pytest.approx(list(OnlineSmoother(2, delay=3).smooth(x)))
    assert OnlineSmoother(2, delay=99).delay == 6, "no wait beyond the window"


def test_in_order_smoothing_keeps_invalid_frames_in_place_and_waits_for_the_delay():
    smoothing = InOrderSmoothing(OnlineSmoother(1.0, delay=2))  # radius 3
    scores = [0.1, 0.9, None, 0.8, 0.2, None, 0.3]  # None: an invalid frame, never smoothed
    released = [smoothing.push(i, x) for i, x in enumerate(scores)]
    assert [[i for i, _ in r] for r in released] == [[], [], [], [0], [1, 2], [], [3]], \
        "frame t comes out with the second valid frame after it, invalid frames behind earlier ones"
    out = [pair for r in released for pair in r] + smoothing.flush()
    assert [i for i, _ in out] == list(range(7)), "every frame once, in order"
    assert out[2][1] is None and out[5][1] is None
    valid = [x for x in scores if x is not None]
    expected = OnlineSmoother(1.0, delay=2).smooth(np.array(valid))
    assert [v for _, v in out if v is not None] == pytest.approx(list(expected))
    assert smoothing.flush() == [], "a flush empties it"


def test_detection_at_threshold():
    d = detection_at([0, 0, 1, 1, 1], [0.1, 0.6, 0.7, 0.2, 0.9], 0.5)
    assert (d.precision, d.recall, d.false_alarm_rate) == pytest.approx((2 / 3, 2 / 3, 0.5))
    assert d.f1 == pytest.approx(2 / 3)
    # alerts on 3 of 4 abnormal frames and 2 of 4 normal ones (one exactly at the threshold counts)
    d = detection_at([1, 1, 1, 1, 0, 0, 0, 0], [0.9, 0.8, 0.5, 0.1, 0.7, 0.5, 0.2, 0.3], 0.5)
    assert (d.precision, d.recall, d.false_alarm_rate) == pytest.approx((3 / 5, 3 / 4, 2 / 4))
    assert d.f1 == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))


def test_calibration_maps_quantile_to_half():
    rng = np.random.default_rng(0)
    normal = rng.normal(1.0, 0.1, 1000)
    groups = np.repeat(np.arange(4), 250)
    cal = fit_calibration(normal, 0.99, groups)
    assert cal.apply(np.array([cal.threshold]))[0] == pytest.approx(0.5)
    assert cal.apply(np.array([cal.median]))[0] == pytest.approx(0.1)
    values = cal.apply(np.linspace(0, 3, 50))
    assert np.all(np.diff(values) > 0) and values[0] > 0 and values[-1] <= 1
    assert 0 <= cal.false_alarm_rate < 0.05
    assert (cal.apply(normal) > 0.5).mean() == pytest.approx(0.01, abs=0.002)
    import torch

    assert float(cal.apply(torch.tensor([cal.threshold]))[0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2 finite"):
        fit_calibration(np.array([1.0]), 0.99)


def test_calibration_false_alarm_rate_counts_each_half_against_the_others_threshold():
    """Groups 0 and 2 hold scores 0.005..0.995, groups 1 and 3 the same + 0.5. Fitted on the first
    half (threshold ~0.90) the second alarms on its 60 values from 0.905 up; fitted on the second
    (~1.40) the first never does: (0.6 + 0) / 2. Counting each half against its own threshold would
    give about 0.1."""
    low = np.linspace(0.005, 0.995, 100)
    scores = np.concatenate([low, low + 0.5, low, low + 0.5])
    groups = np.repeat([0, 1, 2, 3], 100)
    assert fit_calibration(scores, 0.9, groups).false_alarm_rate == pytest.approx(0.3)
    assert fit_calibration(scores, 0.9).false_alarm_rate is None  # no groups: no cross-validation


def test_scene_check_warns_only_when_most_of_enough_frames_alert():
    n = SCENE_CHECK_FRAMES
    unfamiliar = scene_check(np.ones(n))
    assert unfamiliar["frames"] == n and unfamiliar["alert_share"] == 1.0
    assert "aedmae calibrate --data" in unfamiliar["warning"]
    assert scene_check(np.ones(n - 1))["warning"] is None  # too few frames to tell
    # 85%: a partly abnormal clip of its own scene can be so (Ped2 07, three-quarters abnormal: 80%)
    assert scene_check(np.r_[np.ones(85), np.full(14, 0.49), 0.2])["warning"] is None
    assert scene_check(np.r_[np.full(86, 0.5), np.full(14, 0.1)])["warning"] is not None  # 0.5 alerts; 86% >= 86%
    with_nan = scene_check(np.r_[np.ones(n), np.full(50, np.nan)])  # uncalibrated or unscored frames left out
    assert with_nan["frames"] == n and with_nan["warning"] is not None
    assert scene_check([]) == {"frames": 0, "alert_share": None, "warning": None}
    assert scene_check(np.full(500, np.nan))["warning"] is None  # an uncalibrated model never warns
