"""What averaging the scores of independently trained runs gives, from their `aedmae evaluate` outputs.

    python benchmarks/seed_ensemble.py --eval E=runs/eval_bf16 --eval F=runs/eval_seed1_bf16 \
        [--eval H=...] [--sigma 3] [--json FILE]

Each run's frame score is put on a common scale by its own calibration (from its metrics.json):
z = Calibration.logit(score) = (score - threshold) * slope. It is linear in the run's score, so a
run alone keeps its AUC, and unlike the calibrated score it does not saturate at 1 (no ties among the
abnormal frames). An ensemble's frame score is the mean z of its runs; smoothed = the evaluator's centred
Gaussian on that mean, per video. Every pair of runs is scored (and all runs together, with three or
more). It also prints each run's score levels: the median z of normal and of abnormal frames per
two-class video, and the 90th percentile of all normal frames, which an abnormal frame has to outscore
in the pooled (micro) AUC. Nothing is re-run through a network: this reads scores.csv, so it takes seconds.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.calibration import Calibration
from model.metrics import gaussian_smooth, summarize

CSV_ROUNDING = 1e-3  # scores.csv keeps 6 significant digits: a run's AUC from it may move by this much
Run = dict[str, tuple[np.ndarray, np.ndarray]]  # {video: (labels, z)}


def read_run(folder: Path) -> tuple[Run, float]:
    """{video: (labels, z)} from an evaluate output folder, and the micro AUC its metrics.json reports."""
    metrics_file, scores_file = folder / "metrics.json", folder / "scores.csv"
    for f in (metrics_file, scores_file):
        if not f.is_file():
            raise SystemExit(f"{folder}: no {f.name}; pass folders written by `aedmae evaluate --out`")
    metrics = json.loads(metrics_file.read_text())
    if not metrics["model"].get("calibration"):
        raise SystemExit(f"{folder}: the model had no calibration, so its scores cannot be put on a common scale")
    rows: dict[str, list[tuple[int, int, float]]] = {}  # video: (frame, label, score)
    with scores_file.open() as fh:
        for r in csv.DictReader(fh):
            rows.setdefault(r["video"], []).append((int(r["frame"]), int(r["label"]), float(r["score"])))
    cal = Calibration.from_dict(metrics["model"]["calibration"])
    runs: Run = {}
    for video, items in rows.items():
        items.sort()
        # numbered 0..N-1 (as evaluate writes them): then runs with equal label arrays scored the same frames
        if [f for f, _, _ in items] != list(range(len(items))):
            raise SystemExit(f"{scores_file}: the frames of video {video} are not numbered 0..{len(items) - 1}")
        labels = np.array([lab for _, lab, _ in items], dtype=np.int64)
        runs[video] = (labels, cal.logit(np.array([s for _, _, s in items])))
    return runs, float(metrics["micro_auc"])


def check_same_frames(named: dict[str, Run]) -> None:
    (first, ref), *others = named.items()
    for name, run in others:
        if set(run) != set(ref):
            raise SystemExit(f"{name} and {first} scored different videos: {sorted(run)} against {sorted(ref)}")
        for video, (labels, _) in run.items():
            if not np.array_equal(labels, ref[video][0]):
                raise SystemExit(f"{name} and {first} differ in the frames or labels of video {video}")


def score(runs: list[Run], sigma: float) -> dict[str, Any]:
    mean = {v: (y, np.mean([r[v][1] for r in runs], axis=0)) for v, (y, _) in runs[0].items()}
    raw = summarize(mean)
    smoothed = summarize({v: (y, gaussian_smooth(z, sigma)) for v, (y, z) in mean.items()})
    return {"micro_auc": raw["micro_auc"], "micro_auc_smoothed": smoothed["micro_auc"],
            "macro_auc": raw["macro_auc"], "per_video_auc": raw["per_video_auc"]}


def ensemble_table(named: dict[str, Run], sigma: float) -> list[dict[str, Any]]:
    """One row per run alone, per pair, and (three runs or more) all together."""
    names = list(named)
    alone = {n: score([named[n]], sigma) for n in names}
    rows = [{"runs": [n], **alone[n]} for n in names]
    groups: list[tuple[str, ...]] = list(itertools.combinations(names, 2))
    if len(names) > 2:
        groups.append(tuple(names))
    for group in groups:
        row = {"runs": list(group), **score([named[n] for n in group], sigma)}
        row["members_mean_micro_auc"] = float(np.mean([alone[n]["micro_auc"] for n in group]))
        row["gain_over_members_mean"] = row["micro_auc"] - row["members_mean_micro_auc"]
        rows.append(row)
    return rows


def score_levels(named: dict[str, Run]) -> dict[str, dict[str, Any]]:
    """Per run and two-class video: median z of its normal and of its abnormal frames, and the 90th
    percentile of every normal frame of the test set (what an abnormal frame must outscore in the pooled AUC)."""
    levels = {}
    for name, run in named.items():
        normal = np.concatenate([z[y == 0] for y, z in run.values()])
        row: dict[str, Any] = {"all_normal_p90": float(np.quantile(normal, 0.9))}
        for video, (y, z) in run.items():
            if 0 < y.sum() < len(y):
                row[video] = {"normal_median": float(np.median(z[y == 0])),
                              "abnormal_median": float(np.median(z[y == 1]))}
        levels[name] = row
    return levels


def parse_eval(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER, got {text!r}")
    return name, Path(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval", type=parse_eval, action="append", required=True, metavar="NAME=FOLDER",
                   help="an `aedmae evaluate` output folder (metrics.json + scores.csv); at least two")
    p.add_argument("--sigma", type=float, default=3.0, help="smoothing, frames (the evaluator's default)")
    p.add_argument("--json")
    args = p.parse_args()
    if len(args.eval) < 2 or len({n for n, _ in args.eval}) != len(args.eval):
        p.error("give at least two --eval NAME=FOLDER with different names")
    named, reported = {}, {}
    for name, folder in args.eval:
        named[name], reported[name] = read_run(folder)
    check_same_frames(named)
    rows = ensemble_table(named, args.sigma)
    for row in rows:  # a run alone must reproduce what its evaluation reported
        if len(row["runs"]) == 1 and abs(row["micro_auc"] - reported[row["runs"][0]]) > CSV_ROUNDING:
            raise SystemExit(f"{row['runs'][0]}: {row['micro_auc']:.4f} from scores.csv against "
                             f"{reported[row['runs'][0]]:.4f} in metrics.json")
    videos = [v for v, auc in rows[0]["per_video_auc"].items() if auc is not None]
    print(f"{'runs':12s} {'raw':>6s} {'smooth':>6s} {'macro':>6s} {'vs members':>10s} "
          + " ".join(f"{v:>6s}" for v in videos))
    for row in rows:
        gain = f"{100 * row['gain_over_members_mean']:+10.1f}" if "gain_over_members_mean" in row else " " * 10
        print(f"{'+'.join(row['runs']):12s} {100 * row['micro_auc']:6.1f} {100 * row['micro_auc_smoothed']:6.1f} "
              f"{100 * row['macro_auc']:6.1f} {gain} "
              + " ".join(f"{100 * row['per_video_auc'][v]:6.1f}" for v in videos))
    levels = score_levels(named)
    print("\nmedian z (0 = the run's threshold) of normal / abnormal frames per video; "
          "90th percentile of all normal frames")
    for name, row in levels.items():
        print(f"{name:12s} " + "  ".join(f"{v} {row[v]['normal_median']:.2f} / {row[v]['abnormal_median']:.2f}"
                                         for v in videos) + f"  all normal p90 {row['all_normal_p90']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"sigma": args.sigma, "folders": {n: str(f) for n, f in args.eval},
                                               "rows": rows, "levels": levels}, indent=2))


if __name__ == "__main__":
    main()
