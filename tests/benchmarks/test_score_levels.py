"""benchmarks/score_levels.py: normal frames' score levels, and what a moved camera lifts."""

import sys

import numpy as np
import pytest

from tests.benchmarks.test_bench_smoke import ROOT, run_benchmark
from tests.conftest import scene_frames, write_frame_folder


@pytest.mark.slow
def test_score_levels(tiny_checkpoint, footage, labelled_test_set, tmp_path):
    result, stdout = run_benchmark(tmp_path, "score_levels.py", "--model", str(tiny_checkpoint), "--train",
                                   str(footage), "--test", str(labelled_test_set), "--moved")
    assert len(result["moved"]) == 3 and "camera moved" in stdout, "the three half-patch moves of the 4 grids"
    for m in result["moved"].values():
        assert 0 <= m["above_threshold"] <= 1 and min(m[f"{k}_ratio"] for k in ("score", "teacher_error",
                                                                                "discrepancy")) > 0
    test_rows = {row["video"]: row for row in result["rows"] if row["set"] == "test"}
    assert set(test_rows) == {"a", "b"}  # both have normal frames
    assert test_rows["a"]["normal"]["frames"] == 12 and test_rows["b"]["normal"]["frames"] == 8
    train_rows = [row for row in result["rows"] if row["set"] == "train"]
    assert train_rows and all(row["trained"]["median"] <= row["trained"]["q90"] for row in train_rows)
    only, _ = run_benchmark(tmp_path, "score_levels.py", "--model", str(tiny_checkpoint), "--train",
                            str(footage), "--test", str(labelled_test_set), "--moved-only")
    assert only["rows"] == [] and only["moved"] == result["moved"]  # the same moved numbers, no levels

    # the held-out tails are scored once under --moved, cut from the moved rows' reference: the same levels
    # (footage long enough to hold out 10-frame tails)
    longer = tmp_path / "longer"
    for name, seed in (("01", 1), ("02", 2)):
        write_frame_folder(longer, name, scene_frames(100, seed=seed))
    runs = [run_benchmark(tmp_path, "score_levels.py", "--model", str(tiny_checkpoint), "--train", str(longer),
                          *extra)[0] for extra in ([], ["--moved"])]
    assert runs[0]["moved"] == {} and len(runs[1]["moved"]) == 3
    for plain, moved in zip(runs[0]["rows"], runs[1]["rows"], strict=True):
        assert plain["held_out"]["frames"] == 10 and moved["held_out"] == pytest.approx(plain["held_out"], rel=1e-5)


def test_moved_rise_by_hand():
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from score_levels import moved_rise

    from model.scoring import FrameScores

    def frames(te, dis, score):
        t = [torch.tensor(v, dtype=torch.float32) for v in (te, dis, score)]
        return FrameScores(*t, torch.full((len(te),), float("nan")), torch.zeros(len(te), 1, 1))

    still = frames([1, 2, 4], [1, 1, 1], [2, 2, 2])
    moved = frames([1, 2, 4], [3, 2, 5], [1, 3, 9])
    assert moved_rise(still, moved, threshold=2.5) == {"above_threshold": 2 / 3, "score_ratio": 1.5,
                                                       "teacher_error_ratio": 1.0, "discrepancy_ratio": 3.0}


def test_motion_energy_by_hand():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from score_levels import motion_energy

    frames = np.zeros((4, 2, 2, 1), np.uint8)
    frames[2] = 10  # frame 1 sees |f2 - f0| = 10, frame 3 sees |f3 - f2| = 10 (end clamped)
    assert motion_energy(frames).tolist() == [0.0, 10.0, 0.0, 10.0]
