"""What footage the model never saw does to its scores: calibration honesty and validation hardness,
measured on training videos held out whole (a model trained with `train.holdout_videos`).

    python benchmarks/unseen_videos.py --model runs/lvo --train ../shared/data/ped2/train \
        [--scoring NAME KEY=VALUE ...] [--test ../shared/data/ped2] [--json FILE]

The shipped calibration is fitted on the held-out tails of the training videos: the same people,
minutes later. For each scoring rule (the model's, and any `--scoring` given as `model.scoring`
overrides), the scorer is refit on those tails only, as the shipped one was, and measured on the
videos held out whole, all of them normal footage of people the model never saw:
  * the share of their frames above the tails' alert threshold (raw, and smoothed as the service
    does), beside the tails' own cross-validated false-alarm rate: how far the stated rate is off;
  * the familiar and standard synthetic validations (benchmarks/select_scoring.py) drawn on the
    tails and on the unseen videos: whether a validation on unseen footage is harder and tells
    scoring rules apart where the tails' cannot.
No test label is read before the label-free table is printed; with --test the development AUC of each
rule is added for context.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate_scoring import load
from grid_scoring import test_row, validators

from model.config import with_scoring
from model.errors import ConfigError
from model.evaluation import apply_scorer, clip_errors, fit_scorer_on_segments, synthetic_pairs
from model.metrics import gaussian_smooth, roc_auc

SESSION7 = ["topk_fraction=0.05", "discrepancy_weight=1", "contrast=none"]  # the scorer shipped in session 7


def measure(net: Any, tails: list[Any], unseen: list[Any], unseen_errors: list[Any], pairs: dict[str, Any],
            sigma: float) -> tuple[Any, dict[str, Any]]:
    """One scoring rule (net.cfg.scoring): refit on the tails, measured on the unseen videos."""
    scorer, meta = fit_scorer_on_segments(net, tails)
    threshold = meta["calibration"]["threshold"]
    scores = [apply_scorer(scorer, e).score.numpy() for e in unseen_errors]
    row: dict[str, Any] = {
        "threshold": threshold, "tails_false_alarm_rate": meta["calibration"]["false_alarm_rate"],
        "unseen_above_threshold": float(np.mean(np.concatenate(scores) >= threshold)),
        "unseen_above_threshold_smoothed": float(np.mean(np.concatenate(
            [gaussian_smooth(s, sigma) for s in scores]) >= threshold)),
        "unseen_above_threshold_per_video": {s.video: float(np.mean(x >= threshold)) for s, x in zip(unseen, scores,
                                                                                                  strict=True)},
    }
    for key, (y, te, dis) in pairs.items():
        row[f"{key}_auc"] = roc_auc(y, scorer(te, dis).score.numpy())
    return scorer, row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a checkpoint trained with train.holdout_videos")
    p.add_argument("--train", required=True, help="its training footage")
    p.add_argument("--scoring", nargs="+", action="append", metavar="NAME KEY=VALUE",
                   help=f"a scoring rule to measure beside the model's (default: session7 {' '.join(SESSION7)})")
    p.add_argument("--test", help="a labelled test set (AUC reported for context, never used to choose)")
    p.add_argument("--sigma", type=float, default=3.0, help="smoothing, frames")
    p.add_argument("--seeds", type=int, nargs=3, default=[10, 11, 12], metavar=("STANDARD", "FAMILIAR", "FAR"))
    p.add_argument("--json")
    args = p.parse_args()
    net, _, train_cfg, cache, train, held = load(args.model, args.train)
    names = set(train_cfg.holdout_videos)
    if not names:
        p.error(f"{args.model} held out no whole video (train.holdout_videos is empty): nothing unseen to measure")
    unseen = [s for s in held if s.video in names]
    tails = [s for s in held if s.video not in names]
    if not tails:
        p.error("no held-out tails to refit the scorer on")
    net.eval()
    print(f"tails: {sum(len(s.frames) for s in tails)} frames of {len(tails)} videos; unseen: "
          f"{sum(len(s.frames) for s in unseen)} frames of {', '.join(s.video for s in unseen)}", flush=True)
    unseen_errors = [clip_errors(net, np.asarray(s.frames)) for s in unseen]
    pairs = {}
    for key, (synth, seed) in validators(train, train_cfg, tuple(args.seeds)).items():
        pairs[f"{key}_tails"] = synthetic_pairs(net, tails, synth, seed=seed)
        pairs[f"{key}_unseen"] = synthetic_pairs(net, unseen, synth, seed=seed)
    base = net.cfg
    rules = [["model"]] + (args.scoring or [["session7", *SESSION7]])
    rows: dict[str, dict[str, Any]] = {}
    scorers, configs = {}, {}
    for name, *overrides in rules:
        try:
            net.cfg = with_scoring(base, overrides)
        except ConfigError as e:
            p.error(f"scoring {name}: {e}")
        configs[name] = net.cfg
        scorers[name], row = measure(net, tails, unseen, unseen_errors, pairs, args.sigma)
        rows[name] = {"overrides": overrides, **row}
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    print(f"\n{'scoring':>9s} {'tails FA':>9s} {'unseen above':>13s} {'smoothed':>9s}   familiar tails / unseen   "
          "standard tails / unseen")
    for name, r in rows.items():
        print(f"{name:>9s} {100 * r['tails_false_alarm_rate']:8.1f}% {100 * r['unseen_above_threshold']:12.1f}% "
              f"{100 * r['unseen_above_threshold_smoothed']:8.1f}%   {100 * r['familiar_tails_auc']:8.2f} / "
              f"{100 * r['familiar_unseen_auc']:6.2f}   {100 * r['standard_tails_auc']:14.2f} / "
              f"{100 * r['standard_unseen_auc']:6.2f}", flush=True)
    for name, _ in rows.items() if args.test else ():
        net.cfg = configs[name]
        rows[name]["test"] = test_row(net, scorers[name], args.test, cache, args.sigma)
        t = rows[name]["test"]
        print(f"{name} development split (context only): micro raw {100 * t['micro_raw']:.1f}, smoothed "
              f"{100 * t['micro_smoothed']:.1f}; normal test frames above the threshold "
              f"{100 * t['normal_frames_above_threshold']:.1f}%", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "unseen": sorted(names), "seeds": args.seeds,
                                               "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
