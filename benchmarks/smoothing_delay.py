"""What the service's smoothing look-ahead buys: AUC and detection against how long events wait.

    aedmae evaluate --data ../shared/data/ped2 --out runs/eval      # writes runs/eval/scores.csv
    python benchmarks/smoothing_delay.py --scores runs/eval/scores.csv [--sigma 3] [--fps 25] [--json FILE]

For each delay d from 0 (causal) to 3 sigma (the whole window, which is the offline smoothing), the
frames' scores go through the service's smoother (model.metrics.OnlineSmoother, the one definition),
video by video, and the table gives the micro and macro AUC of the smoothed score and the precision,
recall and false-alarm rate of the smoothed calibrated score at 0.5: what an operator gains for each
frame of wait. Nothing is chosen here; the service's default (the whole window) was set because it
makes the service's smoothing the one `aedmae evaluate` reports, not from this table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.metrics import OnlineSmoother, detection_at, smoothing_radius, summarize


def read_scores(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{video: {"label", "score", "calibrated"}} from an `aedmae evaluate` scores.csv."""
    columns: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key in ("label", "score", "calibrated"):
                columns[row["video"]][key].append(float(row[key]))
    if not columns:
        raise SystemExit(f"{path}: no scores")
    return {v: {k: np.array(x) for k, x in c.items()} for v, c in columns.items()}


def delay_rows(videos: dict[str, dict[str, np.ndarray]], sigma: float, fps: float) -> list[dict[str, Any]]:
    rows = []
    labels = np.concatenate([c["label"] for c in videos.values()])
    for delay in range(smoothing_radius(sigma) + 1):
        smoothed = {v: (c["label"], OnlineSmoother(sigma, delay).smooth(c["score"])) for v, c in videos.items()}
        auc = summarize(smoothed)
        calibrated = np.concatenate([OnlineSmoother(sigma, delay).smooth(c["calibrated"]) for c in videos.values()])
        det = detection_at(labels, calibrated, 0.5)
        rows.append({"delay_frames": delay, "delay_s": delay / fps, "micro_auc": auc["micro_auc"],
                     "macro_auc": auc["macro_auc"], "precision": det.precision, "recall": det.recall,
                     "false_alarm_rate": det.false_alarm_rate})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scores", type=Path, required=True, help="scores.csv written by `aedmae evaluate`")
    p.add_argument("--sigma", type=float, default=3.0, help="smoothing sigma, frames (evaluate's default)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate, to state the wait in seconds")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = delay_rows(read_scores(args.scores), args.sigma, args.fps)
    print(f"{'wait, frames':>12s} {'s':>5s} {'micro':>6s} {'macro':>6s} {'precision':>9s} {'recall':>6s} "
          f"{'false alarms':>12s}")
    for r in rows:
        print(f"{r['delay_frames']:12d} {r['delay_s']:5.2f} {100 * r['micro_auc']:6.1f} {100 * r['macro_auc']:6.1f} "
              f"{100 * r['precision']:9.1f} {100 * r['recall']:6.1f} {100 * r['false_alarm_rate']:11.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"scores": str(args.scores), "sigma": args.sigma, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
