"""benchmarks/speed_validation.py: held-out walkers made k times as fast, nothing pasted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.benchmarks.test_bench_smoke import run_benchmark
from tests.conftest import scene_frames, write_frame_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from speed_validation import (
    bootstrap_difference,
    centres_of,
    far_offset,
    faster,
    full_videos,
    moving_regions,
    spearman,
)

from model.dataset import Segment

# scene_frames: discs of radius 4 walk at row 16 (2 px a frame) and row 32 (-1 px a frame)


def _disc_column(frame: np.ndarray, row: int) -> float:
    return float(np.flatnonzero(frame[row, :, 0] == 30).mean())


def test_moving_regions_box_each_walker_over_the_whole_faster_path():
    frames = scene_frames(40, seed=1)
    t, reach = 20, 4
    boxes = moving_regions(frames, t, reach, np.random.default_rng(0), most=3)
    assert len(boxes) == 2, boxes
    for row in (16, 32):
        (y0, y1, x0, x1), = [b for b in boxes if b[0] <= row < b[1]]
        for s in (t - reach, t, t + reach):
            assert x0 <= _disc_column(frames[s], row) - 4 and _disc_column(frames[s], row) + 4 < x1, (row, s)
        assert y0 <= row - 4 and row + 4 < y1
    assert moving_regions(frames, t, reach, np.random.default_rng(0), most=1) == boxes[:1]
    still = np.repeat(frames[:1], 40, axis=0)
    assert moving_regions(still, t, reach, np.random.default_rng(0), most=3) == [], "nothing moves, no region"


def test_faster_swaps_the_context_frames_inside_the_box_only():
    frames = scene_frames(40, seed=1)
    t, gap = 20, 3
    assert np.array_equal(faster(frames, t, gap, 2 * gap, None), frames[[t - gap, t, t + gap]])
    box = (10, 24, 20, 50)
    w = faster(frames, t, gap, 2 * gap, box)
    assert np.array_equal(w[1], frames[t]), "the centre frame is untouched"
    inside = np.zeros(frames.shape[1:3], bool)
    inside[10:24, 20:50] = True
    for k, s in ((0, -1), (2, 1)):
        assert np.array_equal(w[k][inside], frames[t + s * 2 * gap][inside])
        assert np.array_equal(w[k][~inside], frames[t + s * gap][~inside])
    assert not np.array_equal(w[0], frames[t - gap]), "the walker inside the box did move"


def test_whole_frame_samples_are_each_centre_clean_and_with_the_whole_context_twice_as_far(monkeypatch):
    import speed_validation

    seen = []

    def errors(net, windows):  # records the windows the network would score
        seen.extend(windows.numpy())
        return torch.zeros(len(windows), 1, 4), torch.zeros(len(windows), 1, 4)

    monkeypatch.setattr(speed_validation, "token_errors", errors)
    frames = scene_frames(40, seed=1)
    centres = [("a", 12), ("a", 20)]
    y, owner, te, _ = speed_validation.speed_samples(None, {"a": (frames, 0)}, centres, 3, 2, 0, 3, whole=True)
    assert y.tolist() == [False, True, False, True] and owner.tolist() == [0, 0, 1, 1] and len(te) == 4
    for k, (_, t) in enumerate(centres):
        assert np.array_equal(seen[2 * k], frames[[t - 3, t, t + 3]])
        assert np.array_equal(seen[2 * k + 1], frames[[t - 6, t, t + 6]]), "the whole frame, no box"
    boxes = speed_validation.speed_samples(None, {"a": (frames, 0)}, centres, 3, 2, 0, 3)[0]
    assert boxes.sum() == 4, "without whole: one sample per walker's box (two walkers)"


def test_a_factor_that_is_not_whole_takes_the_nearest_frame_and_must_move_one():
    assert [far_offset(3, f) for f in (2, 1.34, 4 / 3, 1.5, 1.1)] == [6, 4, 4, 5, 3], "rounded half up"
    assert far_offset(2, 1.25) == 3 and far_offset(1, 1.5) == 2
    frames = scene_frames(40, seed=1)
    w = faster(frames, 20, 3, far_offset(3, 1.34), (0, frames.shape[1], 0, frames.shape[2]))
    assert np.array_equal(w, frames[[16, 20, 24]]), "a third faster: frames t-4 and t+4 in place of t-3 and t+3"
    r = _script("speed_validation.py", "--model", "unused", "--train", "unused", "--gaps", "5", "3", "--base", "3",
                "--factor", "1.1")  # gap 5: frames t-6, t+6; gap 3: 3.3 rounds to 3, nothing moves
    assert r.returncode == 2 and "--factor 1.1 moves no context frame at gap 3" in r.stderr, r.stderr[-500:]


def test_centres_are_held_out_frames_whose_window_fits_inside_the_video():
    videos = {"a": (np.zeros((30, 4, 4, 1), np.uint8), 25), "b": (np.zeros((30, 4, 4, 1), np.uint8), 2)}
    centres = centres_of(videos, 4)
    assert [t for v, t in centres if v == "a"] == [25], "held out (>= 25) and t + 4 <= 29"
    assert [t for v, t in centres if v == "b"] == list(range(4, 26)), "t - 4 >= 0 too"


def test_full_videos_join_each_tail_to_the_head_before_it():
    frames = scene_frames(20)
    train = [Segment("a", frames[:15], 0), Segment("b", frames[:15], 0)]
    held = [Segment("a", frames[15:], 15), Segment("b", frames[16:], 16)]  # b's tail does not follow its head
    videos = full_videos(train, held)
    assert list(videos) == ["a"] and videos["a"][1] == 15 and np.array_equal(videos["a"][0], frames)


def test_rank_correlation_and_bootstrap_interval():
    assert spearman([0.1, 0.5, 0.3], [1, 3, 2]) == pytest.approx(1.0)
    assert spearman([0.1, 0.5, 0.3], [3, 1, 2]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    owner = np.repeat(np.arange(40), 3)
    y = np.tile([False, True, True], 40)
    centres = [("a", t) for t in range(40)]
    separated = {"y": y, "owner": owner, "score": y + rng.uniform(0, 0.5, y.size), "centre_frames": centres}
    mixed = {"y": y, "owner": owner, "score": rng.uniform(0, 1, y.size), "centre_frames": centres}
    lo, hi = bootstrap_difference(separated, mixed, resamples=200)
    assert 0 < lo <= hi < 1, (lo, hi)
    assert bootstrap_difference(mixed, mixed, resamples=50) == (0.0, 0.0)
    with pytest.raises(ValueError, match="different centre frames"):
        bootstrap_difference(separated, mixed | {"centre_frames": [*centres[1:], ("a", 40)]})


@pytest.mark.slow
def test_speed_validation_end_to_end(tiny_checkpoint, tmp_path):
    root = tmp_path / "train"
    for name, seed in (("01", 1), ("02", 2)):  # 12 held-out frames each (10%), 4 reach inside
        write_frame_folder(root, name, scene_frames(120, seed=seed))
    result, stdout = run_benchmark(tmp_path, "speed_validation.py", "--model", str(tiny_checkpoint), "--train",
                                   str(root), "--gaps", "1", "2", "3", "--base", "2", "--factor", "2",
                                   "--dev-auc", "1=0.5", "2=0.7", "3=0.6")
    assert result["centres"] == 2 * (12 - 6) and result["base"] == 2
    gaps = result["gaps"]
    assert set(gaps) == {"1", "2", "3"} and gaps["2"]["difference"] == 0
    for g in gaps.values():
        assert 0 <= g["auc"] <= 1 and g["negatives"] == 12 and g["positives"] > 0
        assert 0 <= g["teacher_error_only"] <= 1 and 0 <= g["discrepancy_only"] <= 1
        lo, hi = g["difference_ci95"]
        assert lo <= g["difference"] <= hi or g["difference"] == 0
    assert -1 <= result["spearman_with_dev"] <= 1 and "Spearman rank correlation" in stdout
    # --compare pairs two reports on their centres: a report against itself differs by exactly 0
    report = tmp_path / "speed_validation.json"
    same = _script("speed_validation.py", "--compare", str(report), str(report))
    assert same.returncode == 0 and "+0.00 [+0.00, +0.00]" in same.stdout, same.stderr[-2000:]
    fewer = json.loads(report.read_text())
    fewer["centre_frames"] = fewer["centre_frames"][1:]
    (tmp_path / "fewer.json").write_text(json.dumps(fewer))
    other = _script("speed_validation.py", "--compare", str(report), str(tmp_path / "fewer.json"))
    assert other.returncode == 1 and "different centre frames" in other.stderr
    # ... and refuses reports that sped up another number of regions per centre
    more = json.loads(report.read_text())
    assert more["regions"] == 3, "the report records --regions"
    (tmp_path / "more.json").write_text(json.dumps(more | {"regions": 5}))
    unpaired = _script("speed_validation.py", "--compare", str(report), str(tmp_path / "more.json"))
    assert unpaired.returncode == 1 and "do not pair" in unpaired.stderr, unpaired.stderr[-2000:]


def _script(script: str, *args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    """benchmarks/SCRIPT ARGS, whatever its exit (run_benchmark asserts success)."""
    env = os.environ | ({"AEDMAE_CACHE_DIR": str(cache)} if cache else {})
    return subprocess.run([sys.executable, f"benchmarks/{script}", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=300, env=env)


@pytest.mark.parametrize(("rule", "what"), [("speed", "speed"), ("whole", "whole-frame speed")])
def test_speed_rules_by_hand(rule, what):
    from candidates import PAIRED, choose, shortfalls

    def choose_by_speed(rows, changes):
        return choose(rows, changes, rule)

    key, other = PAIRED[rule][0], PAIRED["whole" if rule == "speed" else "speed"][0]

    def row(speed, ci_low=0.01, familiar=0.98, standard=0.99, false_alarms=0.02, moved=0.05):
        # the other rule's measure fails that rule's own conditions (no gain, an interval below 0) for every
        # candidate: it must not matter to this rule
        return {f"{key}_auc": speed, f"{key}_vs_baseline_ci95": [ci_low, 0.1], f"{other}_auc": 0.5,
                f"{other}_vs_baseline_ci95": [-0.5, -0.1], "familiar_auc": familiar,
                "standard_auc": standard, "false_alarm_rate": false_alarms,
                "held_out_above_threshold_moved": {"0,4": moved / 2, "4,4": moved}}

    changes = {"A": 0, "B": 1, "C": 2}
    assert choose_by_speed({"A": row(0.87), "B": row(0.875)}, changes) == "A", "0.5 points: too little"
    assert choose_by_speed({"A": row(0.87), "B": row(0.90)}, changes) == "B"
    assert choose_by_speed({"A": row(0.87), "B": row(0.90, ci_low=-0.01)}, changes) == "A", "interval reaches 0"
    assert choose_by_speed({"A": row(0.87), "B": row(0.90, familiar=0.976)}, changes) == "A", "familiar -0.4"
    assert choose_by_speed({"A": row(0.87), "B": row(0.90, familiar=0.978)}, changes) == "B", "familiar -0.2"
    assert choose_by_speed({"A": row(0.87), "B": row(0.90, standard=0.987)}, changes) == "A", "standard -0.3"
    assert choose_by_speed({"A": row(0.87), "B": row(0.90, false_alarms=0.032)}, changes) == "A"
    assert choose_by_speed({"A": row(0.87), "B": row(0.90, moved=0.145)}, changes) == "A", "moved camera"
    assert choose_by_speed({"A": row(0.87), "B": row(0.90), "C": row(0.905)}, changes) == "B", "within 1: fewer changes"
    assert choose_by_speed({"A": row(0.87), "B": row(0.90), "C": row(0.915)}, changes) == "C"
    no_pair = row(0.95) | {f"{key}_vs_baseline_ci95": None}
    assert choose_by_speed({"A": row(0.87), "B": no_pair}, changes) == "A", "unpaired: not adoptable"
    # what the script prints for every candidate the rule passes over: each condition it misses, in words
    assert shortfalls(row(0.90), row(0.87), rule) == []
    assert shortfalls(row(0.875, familiar=0.976, moved=0.153), row(0.87), rule) == [
        f"{what} AUC 87.50 < 88.00", "familiar AUC 97.60 < 97.70",
        "moved camera 15.3% above the threshold > 10%"]
    assert shortfalls(no_pair, row(0.87), rule) == [f"{what} not paired with the baseline's"]
    assert shortfalls(row(0.90, ci_low=-0.01), row(0.87), rule) == [f"{what} interval [-1.00, 10.00] reaches 0"]
    assert shortfalls(row(0.90, false_alarms=0.032, standard=0.987), row(0.87), rule) == [
        "standard AUC 98.70 < 98.80", "false alarms 3.2% > 3%"]
    # session 49's floor: familiar may lie up to 1.0 point below the baseline's, no further
    assert choose({"A": row(0.87), "B": row(0.90, familiar=0.972)}, changes, rule, 0.01) == "B", "familiar -0.8"
    assert choose({"A": row(0.87), "B": row(0.90, familiar=0.968)}, changes, rule, 0.01) == "A", "familiar -1.2"
    assert shortfalls(row(0.90, familiar=0.968), row(0.87), rule, 0.01) == ["familiar AUC 96.80 < 97.00"]


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["speed", "whole"])
def test_candidates_report_speed_and_choose_by_it(tiny_checkpoint, tmp_path, rule):
    from candidates import choose, shortfalls

    root = tmp_path / "train"
    for name, seed in (("01", 1), ("02", 2)):
        write_frame_folder(root, name, scene_frames(150, seed=seed))  # 15 held out, 3 reach 12 both ways
    # the speed rule's run keeps the defaults (2x, familiar 0.3 points below at most)
    factor = ["--whole-factor", "1.5", "--familiar-loss", "1.0"] if rule == "whole" else []
    result, stdout = run_benchmark(tmp_path, "candidates.py", "--train", str(root), "--rule", rule,
                                   "--candidate", "A", str(tiny_checkpoint), "--candidate", "G2",
                                   str(tiny_checkpoint), "context_gap=2", *factor)
    rows = result["rows"]
    loss = 0.01 if rule == "whole" else 0.003
    assert result["rule"] == rule and result["whole_factor"] == (1.5 if rule == "whole" else 2)
    assert result["familiar_loss"] == pytest.approx(loss)
    assert result["chosen"] == choose(rows, {k: r["changes"] for k, r in rows.items()}, rule, loss)
    assert rows["G2"]["shortfalls"] == shortfalls(rows["G2"], rows["A"], rule, loss)
    gaps = {"A": json.loads((tiny_checkpoint / "model.json").read_text())["model"]["scoring"]["context_gap"], "G2": 2}
    for name, row in rows.items():  # both measures, whichever rule reads one; the box one always 2x
        assert 0 <= row["speed_auc"] <= 1 and row["speed_samples"]["centres"] == 2 * 3
        assert row["speed_samples"]["far"] == 2 * gaps[name]
        assert 0 <= row["whole_speed_auc"] <= 1 and row["whole_speed_samples"] == {
            "centres": 6, "positives": 6, "negatives": 6, "far": far_offset(gaps[name], result["whole_factor"])
        }, "one whole sped-up frame per centre, at --whole-factor"
    # each candidate's line says its paired speed differences and why it is (not) adoptable
    assert ("not adoptable: " + "; ".join(rows["G2"]["shortfalls"]) if rows["G2"]["shortfalls"]
            else "adoptable") in stdout
    for key, what in (("speed", " speed "), ("whole_speed", " whole-frame speed ")):
        lo, hi = rows["G2"][f"{key}_vs_baseline_ci95"]
        assert lo <= hi and f"{what}{100 * (rows['G2'][f'{key}_auc'] - rows['A'][f'{key}_auc']):+.2f} " \
            f"[{100 * lo:+.2f}, {100 * hi:+.2f}] against A" in f" {stdout}"


def test_speed_rule_refuses_footage_too_short_before_measuring_anything(tiny_checkpoint, tmp_path):
    root = tmp_path / "train"
    for name, seed in (("01", 1), ("02", 2)):
        write_frame_folder(root, name, scene_frames(100, seed=seed))  # 10 held out: none reaches 12 both ways
    args = ["--train", str(root), "--rule", "speed", "--candidate", "A", str(tiny_checkpoint),
            "--candidate", "B", str(tiny_checkpoint), "context_gap=2"]
    r = _script("candidates.py", *args, cache=tmp_path / "cache")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "candidate A: no held-out frame" in r.stderr and "footage too short" in r.stderr
    assert "fitting the scorer" not in r.stderr + r.stdout  # refused before the first measurement


@pytest.mark.parametrize(("args", "message"), [
    (["--familiar-loss", "1.0"], "--familiar-loss is a condition of --rule speed, whole and teacher"),
    # the default, said
    (["--familiar-loss", "0.3"], "--familiar-loss is a condition of --rule speed, whole and teacher"),
    (["--rule", "whole", "--familiar-loss", "-1"], "--familiar-loss must be between 0 and 100 points"),
])
def test_familiar_loss_refused_where_it_means_nothing(tmp_path, args, message):
    r = _script("candidates.py", "--train", str(tmp_path), "--candidate", "A", str(tmp_path / "a"),
                "--candidate", "B", str(tmp_path / "b"), *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
