"""benchmarks/seed_ensemble.py: the mean of calibrated logits by hand, and end to end on real `aedmae
evaluate` outputs of a tiny model."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.cli import main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed_ensemble import ensemble_table, score_levels  # noqa: E402


def test_two_runs_that_err_on_different_frames_rank_perfectly_together():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = {"a": (y, np.array([0.0, 1, 5, 3, 4, 6]))}  # normal frame 2 above two abnormal ones: AUC 7/9
    q = {"a": (y, np.array([5.0, 1, 0, 3, 4, 6]))}  # normal frame 0 instead: 7/9
    rows = {"+".join(r["runs"]): r for r in ensemble_table({"P": p, "Q": q}, sigma=1.0)}
    assert rows["P"]["micro_auc"] == pytest.approx(7 / 9) and rows["Q"]["micro_auc"] == pytest.approx(7 / 9)
    assert rows["P+Q"]["micro_auc"] == 1.0  # mean [2.5, 1, 2.5, 3, 4, 6]
    assert rows["P+Q"]["gain_over_members_mean"] == pytest.approx(2 / 9)
    assert "P+Q+R" not in rows


def test_three_runs_give_every_pair_and_all_together():
    y = np.array([0, 1])
    runs = {n: {"v": (y, np.array([0.0, s]))} for n, s in (("A", 1), ("B", -1), ("C", 2))}
    rows = {"+".join(r["runs"]): r for r in ensemble_table(runs, sigma=1.0)}
    assert set(rows) == {"A", "B", "C", "A+B", "A+C", "B+C", "A+B+C"}
    assert rows["A+B"]["micro_auc"] == 0.5  # mean [0, 0]: a tie
    assert rows["A+B+C"]["micro_auc"] == 1.0 and rows["B"]["micro_auc"] == 0.0


def test_score_levels_by_hand():
    runs = {"P": {"a": (np.array([0, 0, 1]), np.array([-1.0, -3, 4])), "b": (np.array([0, 0]), np.array([0.0, 2]))}}
    levels = score_levels(runs)["P"]
    assert levels["a"] == {"normal_median": -2.0, "abnormal_median": 4.0}
    assert "b" not in levels  # one class only
    assert levels["all_normal_p90"] == pytest.approx(np.quantile([-1, -3, 0, 2], 0.9))


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/seed_ensemble.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_on_real_evaluate_outputs(tiny_checkpoint, labelled_test_set, tmp_path):
    ev = tmp_path / "eval"
    assert main(["evaluate", "--data", str(labelled_test_set), "--model", str(tiny_checkpoint), "--out", str(ev),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    reported = json.loads((ev / "metrics.json").read_text())["micro_auc"]
    twin = tmp_path / "twin"
    shutil.copytree(ev, twin)
    r = run_script("--eval", f"A={ev}", "--eval", f"B={twin}", "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert [row["runs"] for row in rows] == [["A"], ["B"], ["A", "B"]]
    assert rows[0]["micro_auc"] == pytest.approx(reported, abs=1e-3)  # read back from scores.csv
    assert rows[2]["micro_auc"] == pytest.approx(reported, abs=1e-3)  # two identical runs: no gain
    assert "A+B" in r.stdout
    levels = json.loads((tmp_path / "e.json").read_text())["levels"]
    assert set(levels["A"]) == {"b", "all_normal_p90"} and levels["A"] == levels["B"]

    lines = (twin / "scores.csv").read_text().splitlines()
    (twin / "scores.csv").write_text("\n".join(lines[:-1]) + "\n")  # one frame short
    r = run_script("--eval", f"A={ev}", "--eval", f"B={twin}")
    assert r.returncode != 0 and "differ in the frames or labels of video b" in r.stderr
    (twin / "scores.csv").write_text("\n".join(lines[:2] + lines[3:]) + "\n")  # a frame missing inside
    r = run_script("--eval", f"A={ev}", "--eval", f"B={twin}")
    assert r.returncode != 0 and "are not numbered 0.." in r.stderr
    r = run_script("--eval", f"A={ev}", "--eval", f"B={tmp_path / 'nowhere'}")
    assert r.returncode != 0 and "no metrics.json" in r.stderr
    r = run_script("--eval", f"A={ev}")
    assert r.returncode != 0 and "at least two" in r.stderr
