"""benchmarks/select_scoring.py's "far" validation: people from the far half of the footage, pasted
upright where and as big as the camera saw them, moving sideways."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from model.synthetic import frame_offsets
from tests.conftest import scene_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from select_scoring import FAMILIAR, FamiliarObjects, FarObjects

HEIGHT = 48  # scene_frames: a disc of radius 4 walks at row 16 (far half), another at row 32 (near half)


def _rows_cols(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))


@pytest.mark.parametrize("seed", range(10))
def test_far_objects_come_from_the_far_half_upright_at_their_own_size_and_place(seed):
    videos = [scene_frames(30, seed=1)]
    far = FarObjects(videos, FAMILIAR)
    rng = np.random.default_rng(seed)
    obj = far.sample_object(rng)
    x, y, w, h = obj.box
    assert y < HEIGHT / 2 and far.drawn == {"far": 1, "near": 0, "procedural": 0}, f"box at row {y}"
    assert obj.mask.shape == (h, w) and 6 <= h <= 12, "one walking disc"
    frames = far._render(obj, frame_offsets(), far._motion(obj, rng))
    rows, cols = _rows_cols(dict((o, r) for o, _, r in frames)[0])
    assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w, "pasted at its own size, not turned"
    assert abs((rows[0] + rows[-1]) / 2 - (y + (h - 1) / 2)) <= 1, "at the height it was seen at"
    assert abs((cols[0] + cols[-1]) / 2 - (x + (w - 1) / 2)) <= 1
    (r0, c0), (r1, c1) = (np.argwhere(r).mean(axis=0) for o, _, r in frames if o in (-3, 3))
    assert abs(c1 - c0) > 0 and abs(r1 - r0) <= math.tan(math.radians(20)) * abs(c1 - c0) + 1e-6, "sideways"
    assert abs(c1 - c0) / 6 <= FAMILIAR.max_speed * videos[0].shape[2] + 1e-6


def test_far_objects_paste_one_object_with_its_mask():
    videos = [scene_frames(30, seed=2)]
    far = FarObjects(videos, FAMILIAR)
    clean = {o: videos[0][10 + o] for o in frame_offsets()}
    pasted, mask = far.paste(clean, np.random.default_rng(0))
    assert mask.any() and not np.any(np.any(pasted[0] != clean[0], axis=2) & ~mask)
    assert np.flatnonzero(mask.any(axis=1))[0] < HEIGHT / 2


def test_far_objects_fall_back_and_say_so():
    """Footage with walkers only in the near half gives near ones; with none, procedural objects."""
    near_only = scene_frames(30, seed=3)
    near_only[:, : HEIGHT // 2] = near_only[0, : HEIGHT // 2]  # the far disc is gone: part of the background
    far = FarObjects([near_only], FAMILIAR)
    obj = far.sample_object(np.random.default_rng(0))
    assert obj.box[1] >= HEIGHT / 2 and far.drawn == {"far": 0, "near": 1, "procedural": 0}
    still = FarObjects([np.full((20, HEIGHT, 72, 3), 120, np.uint8)], FAMILIAR)
    _, mask = still.paste({o: still.videos[0][10] for o in frame_offsets()}, np.random.default_rng(0))
    assert mask.any() and still.drawn == {"far": 0, "near": 0, "procedural": 1}


def test_detection_limit_bands_by_hand():
    from detection_limits import bands, normal_row

    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    calibrated = np.array([0.1, 0.2, 0.3, 0.6, 0.15, 0.25, 0.7, 0.9])  # normal 0.6 alerts: 1 of 4
    assert normal_row(y, calibrated) == {"band": "held-out normal frames", "frames": 4, "above_threshold": 0.25}
    heights = np.array([5, 5, 20, 100])  # of the pasted frames; frame height 100: two at 5%, two at 20-100%
    small, large = bands(y, calibrated, heights, 100, (0.0, 0.06, 0.15, 1.0))
    assert (small["band"], small["range"], small["frames"]) == ("0-6%", [5, 5], 2)
    assert small["auc"] == pytest.approx((1 + 2) / 8) and small["above_threshold"] == 0
    assert (large["band"], large["range"], large["auc"], large["above_threshold"]) == ("15-100%", [20, 100], 1.0, 1.0)


def test_far_objects_keep_their_last_motion():
    videos = [scene_frames(30, seed=1)]
    far = FarObjects(videos, FAMILIAR)
    far.paste({o: videos[0][10 + o] for o in frame_offsets()}, np.random.default_rng(3))
    m = far.last_motion
    assert m is not None and (m.scale, m.angle, m.spin) == (1.0, 0.0, 0.0)
    speed = math.hypot(m.vx, m.vy) / videos[0].shape[2]
    assert FAMILIAR.min_speed_share * FAMILIAR.max_speed - 1e-9 <= speed <= FAMILIAR.max_speed + 1e-9


def test_walker_speeds_measure_the_far_walkers_only():
    """scene_frames: the far disc walks 2 pixels a frame, the near one 1 (not counted)."""
    from detection_limits import walker_speeds

    speeds = walker_speeds(FarObjects([scene_frames(40, height=96, width=240)], FAMILIAR), pairs=50)
    assert speeds.size >= 40 and np.median(speeds) == pytest.approx(2.0, abs=0.2)
    assert not np.any(np.abs(speeds - 1.0) < 0.3), "the near walker is not a far one"
    assert walker_speeds(FarObjects([scene_frames(3, height=96, width=240)], FAMILIAR)).size == 0, "too short"


@pytest.mark.slow
@pytest.mark.parametrize(("validation", "seed"), [("far", 12), ("familiar", 11)])
def test_detection_limits_end_to_end(tiny_checkpoint, footage, tmp_path, validation, seed):
    from tests.benchmarks.test_bench_smoke import run_benchmark

    result, stdout = run_benchmark(tmp_path, "detection_limits.py", "--model", str(tiny_checkpoint), "--train",
                                   str(footage), "--frames", "12", "--validation", validation)
    assert result["validation"] == validation and result["seed"] == seed, "candidates.py's draw of it"
    assert result["normal"]["band"] == "held-out normal frames" and 0 <= result[f"{validation}_auc"] <= 1
    for key in ("by_height", "by_speed"):
        assert sum(r["frames"] for r in result[key]) == result["normal"]["frames"], key
        assert all(0 <= r["auc"] <= 1 and 0 <= r["above_threshold"] <= 1 for r in result[key])
    assert f"{validation} validation AUC" in stdout and "px a frame" in stdout
    assert ("own people" in stdout) == (validation == "far"), "the far walkers' speeds are for the far validation"


def test_familiar_objects_keep_each_draws_motion_and_draw_as_the_familiar_validation(tiny_checkpoint, footage):
    """--validation familiar splits the draws candidates.py reads: observing each draw's motion changes no draw."""
    from ablate_scoring import load
    from detection_limits import PastedObjects

    from model.evaluation import synthetic_pairs

    net, _, _, _, train, held = load(str(tiny_checkpoint), str(footage))
    videos = [s.frames for s in train]
    pasted = PastedObjects(FamiliarObjects(videos, FAMILIAR))
    y, te, dis = synthetic_pairs(net, held, pasted.synthesizer, seed=11, max_frames=8, observe=pasted)
    assert len(pasted.speeds) == int(y.sum()) == 8 and len(set(pasted.speeds)) > 1
    assert all(0.3 * 0.015 * 0.99 <= s / net.cfg.image_size[1] <= 0.015 * 1.01 for s in pasted.speeds), pasted.speeds
    y2, te2, dis2 = synthetic_pairs(net, held, FamiliarObjects(videos, FAMILIAR), seed=11, max_frames=8)
    assert np.array_equal(y, y2) and te.equal(te2) and dis.equal(dis2)


def test_pasted_objects_are_read_as_synthetic_pairs_draws_them(tiny_checkpoint, footage):
    """detection_limits reads each pasted object's height and speed through synthetic_pairs's ``observe``,
    at the moment it is drawn: one per pasted frame, each draw's own motion, and the same pairs as without."""
    from ablate_scoring import load
    from detection_limits import PastedObjects

    from model.evaluation import synthetic_pairs

    net, _, _, _, train, held = load(str(tiny_checkpoint), str(footage))
    far = FarObjects([s.frames for s in train], FAMILIAR)
    pasted = PastedObjects(far)
    y, te, dis = synthetic_pairs(net, held, far, seed=12, max_frames=10, observe=pasted)
    assert len(pasted.heights) == len(pasted.speeds) == int(y.sum()) == 10
    assert min(pasted.heights) > 0 and len(set(pasted.speeds)) > 1, "each draw's own object, not the last one's"
    y2, te2, dis2 = synthetic_pairs(net, held, far, seed=12, max_frames=10)
    assert np.array_equal(y, y2) and te.equal(te2) and dis.equal(dis2), "observing changes no draw"
