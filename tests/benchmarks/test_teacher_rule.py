"""benchmarks/candidates.py's teacher rule (session 52): the training log's raw teacher-error validation,
three fresh draws, compared with the baseline's pair by pair."""

import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from tests.benchmarks.test_bench_smoke import run_benchmark
from tests.conftest import scene_frames, write_frame_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from speed_validation import bootstrap_difference


def row(teacher, ci_low=0.001, familiar=0.98, standard=0.99, false_alarms=0.02, whole=0.95, moved=0.05):
    # the speed rules' own measures fail their conditions (no gain, intervals below 0): not this rule's
    return {"teacher_auc": teacher, "teacher_vs_baseline_ci95": [ci_low, 0.01], "speed_auc": 0.5,
            "speed_vs_baseline_ci95": [-0.5, -0.1], "whole_speed_auc": whole,
            "whole_speed_vs_baseline_ci95": [-0.5, -0.1], "familiar_auc": familiar, "standard_auc": standard,
            "false_alarm_rate": false_alarms, "held_out_above_threshold_moved": {"0,4": moved / 2, "4,4": moved}}


def test_teacher_rule_by_hand():
    from candidates import choose, shortfalls

    changes = {"A": 0, "B": 1, "C": 2}

    def pick(rows):
        return choose(rows, changes, "teacher")

    assert pick({"A": row(0.992), "B": row(0.9935)}) == "A", "0.15 points: too little"
    assert pick({"A": row(0.992), "B": row(0.9945)}) == "B"
    assert pick({"A": row(0.992), "B": row(0.9945, ci_low=-0.001)}) == "A", "interval reaches 0"
    assert pick({"A": row(0.992), "B": row(0.9945, familiar=0.976)}) == "A", "familiar -0.4"
    assert pick({"A": row(0.992), "B": row(0.9945, familiar=0.978)}) == "B", "familiar -0.2"
    assert pick({"A": row(0.992), "B": row(0.9945, standard=0.9885)}) == "A", "standard -0.15"
    assert pick({"A": row(0.992), "B": row(0.9945, false_alarms=0.032)}) == "A"
    assert pick({"A": row(0.992), "B": row(0.9945, whole=0.935)}) == "A", "whole-frame speed -1.5"
    assert pick({"A": row(0.992), "B": row(0.9945, whole=0.945)}) == "B", "whole-frame speed -0.5"
    assert pick({"A": row(0.992), "B": row(0.9945, moved=0.12)}) == "A", "moved camera"
    assert pick({"A": row(0.992), "B": row(0.9945), "C": row(0.9960)}) == "B", "within 0.2: fewer changes"
    assert pick({"A": row(0.992), "B": row(0.9945), "C": row(0.9970)}) == "C"
    assert pick({"A": row(0.992), "B": row(0.9945) | {"teacher_vs_baseline_ci95": None}}) == "A", "unpaired"
    assert shortfalls(row(0.9945), row(0.992), "teacher") == []
    assert shortfalls(row(0.9930, ci_low=-0.001, standard=0.9885, whole=0.93, moved=0.2), row(0.992), "teacher") == [
        "teacher error AUC 99.30 < 99.40", "teacher error interval [-0.10, 1.00] reaches 0",
        "standard AUC 98.85 < 98.90", "whole-frame speed AUC 93.00 < 94.00",
        "moved camera 20.0% above the threshold > 10%"]
    # --familiar-loss holds here as under the speed rules
    assert shortfalls(row(0.9945, familiar=0.972), row(0.992), "teacher", 0.01) == []


def _draw(score, centres, n=40):
    y = np.r_[np.zeros(n), np.ones(n)]
    return {"y": y, "owner": np.r_[np.arange(n), np.arange(n)], "score": score, "centre_frames": centres}


def test_bootstrap_over_draws_averages_each_draws_paired_difference():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40), np.ones(40)]
    good, noise = _draw(y + rng.uniform(0, 0.5, 80), [1]), _draw(rng.uniform(0, 1, 80), [1])
    worse, better = _draw(rng.uniform(0, 1, 80), [2]), _draw(y + rng.uniform(0, 0.5, 80), [2])
    assert bootstrap_difference([good], [noise], resamples=200) == bootstrap_difference(good, noise, resamples=200)
    lo, hi = bootstrap_difference([good, good | {"centre_frames": [2]}], [noise, noise | {"centre_frames": [2]}],
                                  resamples=200)
    assert 0 < lo <= hi, "better on both draws"
    lo, hi = bootstrap_difference([good, worse], [noise, better], resamples=200)
    assert lo < 0 < hi and abs(lo + hi) < 0.1, "as much better on one draw as worse on the other: about 0"
    with pytest.raises(ValueError, match="different centre frames"):
        bootstrap_difference([good, worse], [noise, noise])
    with pytest.raises(ValueError):
        bootstrap_difference([good, worse], [noise])


def test_synthetic_pairs_are_the_normal_frames_then_the_same_frames_pasted(tiny_checkpoint, footage):
    """Sample i and i + N are one frame, clean and pasted, across batches: what the teacher rule resamples."""
    from ablate_scoring import load
    from select_scoring import FAMILIAR, FamiliarObjects

    from model.evaluation import synthetic_pairs
    from model.synthetic import AnomalySynthesizer

    net, _, train_cfg, _, train, _ = load(str(tiny_checkpoint), str(footage))
    videos = [s.frames for s in train]
    y, te, _ = synthetic_pairs(net, train, AnomalySynthesizer(videos, train_cfg.synthetic), seed=3, max_frames=20)
    y2, te2, _ = synthetic_pairs(net, train, FamiliarObjects(videos, FAMILIAR), seed=3, max_frames=20)
    assert np.array_equal(y, np.r_[np.zeros(20), np.ones(20)]) and np.array_equal(y, y2), "two batches: 16 + 4"
    assert te[:20].equal(te2[:20]), "the clean half is the draw's frames whatever is pasted on them"
    assert not te[20:].equal(te2[20:])


def test_teacher_measure_is_the_training_logs_column(tiny_checkpoint, footage):
    from ablate_scoring import load
    from candidates import teacher_measure

    from model.evaluation import synthetic_validation
    from model.synthetic import AnomalySynthesizer

    net, _, train_cfg, _, train, _ = load(str(tiny_checkpoint), str(footage))
    synthesizer_of = partial(AnomalySynthesizer, [s.frames for s in train], train_cfg.synthetic)
    # one synthesizer for both draws, each logged value from a fresh one: reuse changes no draw
    measure = teacher_measure(net, train, synthesizer_of(), [0, 5])
    logged = [synthetic_validation(net, train, synthesizer_of(), seed=s)["synthetic_auc_teacher_error"] for s in (0, 5)]
    assert measure["aucs"] == pytest.approx(logged, abs=1e-12) and measure["auc"] == pytest.approx(np.mean(logged))
    assert [d["centre_frames"][0] for d in measure["draws"]] == [0, 5]


@pytest.mark.slow
def test_candidates_teacher_rule_end_to_end(tiny_checkpoint, tmp_path):
    from candidates import choose, shortfalls

    root = tmp_path / "train"
    for name, seed in (("01", 1), ("02", 2)):
        write_frame_folder(root, name, scene_frames(150, seed=seed))  # held-out frames reach the whole measure
    result, stdout = run_benchmark(tmp_path, "candidates.py", "--train", str(root), "--rule", "teacher",
                                   "--whole-factor", "1.5", "--teacher-seeds", "7", "8", "9",
                                   "--candidate", "A", str(tiny_checkpoint), "--candidate", "B", str(tiny_checkpoint))
    rows = result["rows"]
    assert result["rule"] == "teacher" and result["teacher_seeds"] == [7, 8, 9]
    for r in rows.values():
        assert len(r["teacher_aucs"]) == 3 and r["teacher_auc"] == pytest.approx(np.mean(r["teacher_aucs"]))
    assert rows["B"]["teacher_aucs"] == rows["A"]["teacher_aucs"], "the same weights on the same draws"
    assert rows["B"]["teacher_vs_baseline_ci95"] == [0.0, 0.0]
    assert result["chosen"] == "A" == choose(rows, {k: r["changes"] for k, r in rows.items()}, "teacher")
    assert rows["B"]["shortfalls"] == shortfalls(rows["B"], rows["A"], "teacher")
    assert "teacher error interval [0.00, 0.00] reaches 0" in rows["B"]["shortfalls"]
    assert "teacher error +0.00 [+0.00, +0.00] against A" in stdout
