"""What scoring every frame on several views is worth (token grids, model.scoring.grid_shifts; time
directions, model.scoring.time_reversal), chosen on label-free measures, then measured on a test set.

    python benchmarks/grid_scoring.py --model CKPT --train ../shared/data/ped2/train \
        [--test ../shared/data/ped2] [--views 1 2 4 2r 4r] [--base 1] [--json FILE]

A view option is a grid count S, with "r" for each grid scored on the window reversed in time too
(2S views). For each option the network is set to score those views and its token statistics and
calibration are refit on the held-out tails of the training videos, as training fits them (the same
refit as `aedmae calibrate --held-out-of TRAIN --set model.scoring.grid_shifts=S [--set
model.scoring.time_reversal=true]`). Then:
  * label-free, on the held-out tails: the "familiar" and "standard" synthetic validation AUCs of
    benchmarks/select_scoring.py and the calibration's cross-validated false-alarm rate; and, as if
    the camera had moved by half a patch (4 pixels right, down, both), the share of the held-out
    normal frames above the alert threshold (reported, not part of the rule, which came first); the
    "far" validation and benchmarks/speed_validation.py's "speed" one (session 36) and its whole-frame
    "whole" one (session 46), reported only;
  * cost: frames/s of the scoring (network + scorer, PyTorch) at batch 8 on this machine, median of 3;
  * with --test: micro AUC raw / offline-smoothed / online, macro AUC, per-video AUC, false alarms
    on normal test frames at the alert threshold (reported, never used to choose).
The choice against ``--base`` (rule written before the first measurement, 2026-11-29; the gain asked
of costlier options since session 17): an option is adoptable iff its familiar AUC is at least 0.2
points above the base's, plus 0.2 for each doubling of the views it scores over the base's, its
standard AUC at most 0.1 points below, and its false-alarm rate <= 3%; the cheapest adoptable option
within 0.1 points of the best adoptable familiar AUC is chosen, else the base. (Session 7 asked 0.2
of 2 and 4 grids alike; their gains, 0.46 and 0.65, clear this rule too, which picks the same 4.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate_scoring import arguments, load
from bench_model import time_fps
from select_scoring import FAMILIAR, FamiliarObjects, FarObjects
from speed_validation import FACTOR, full_videos, speed_measure

from model.calibration import ALERT
from model.config import ScoringConfig
from model.dataset import Segment, shift_image
from model.datasets import read_test_set
from model.evaluation import (
    apply_scorer,
    clip_errors,
    fit_scorer_on_segments,
    metrics_for,
    score_test_set,
    synthetic_pairs,
)
from model.metrics import roc_auc
from model.scoring import FrameScores, Scorer, grid_offsets, score_frames
from model.synthetic import AnomalySynthesizer
from model.window import clip_windows

MIN_GAIN, MAX_LOSS, MAX_FALSE_ALARMS, NEAR_BEST = 0.002, 0.001, 0.03, 0.001


def parse_view(option: str) -> tuple[int, bool]:
    """A view option ("4", "2r") -> (grid count, time reversal)."""
    reverse = option.endswith("r")
    grids = int(option.rstrip("r"))
    if grids not in (1, 2, 4):
        raise ValueError(f"view option {option!r}: the grid count must be 1, 2 or 4")
    return grids, reverse


def cost(option: str) -> int:
    """Views scored per frame (grids x directions)."""
    grids, reverse = parse_view(option)
    return ScoringConfig(grid_shifts=grids, time_reversal=reverse).views


def choose(rows: dict[str, dict[str, Any]], base: str = "1") -> str:
    """The view option the rule picks from the label-free measures of each option (``base`` must be there)."""
    b = rows[base]

    def adoptable(option: str, r: dict[str, Any]) -> bool:
        gain = MIN_GAIN * (1 + max(0.0, math.log2(cost(option) / cost(base))))
        return (r["familiar_auc"] >= b["familiar_auc"] + gain - 1e-12 and r["false_alarm_rate"] <= MAX_FALSE_ALARMS
                and r["standard_auc"] >= b["standard_auc"] - MAX_LOSS)

    ok = {o: r for o, r in rows.items() if o != base and adoptable(o, r)}
    if not ok:
        return base
    best = max(r["familiar_auc"] for r in ok.values())
    return min((o for o, r in ok.items() if r["familiar_auc"] >= best - NEAR_BEST), key=lambda o: (cost(o), o))


def held_out_moved(net: Any, scorer: Scorer, held: list[Segment], dy: int, dx: int) -> FrameScores:
    """The scores of every held-out frame moved down dy and right dx pixels (edges repeated), as if the
    camera had moved, the segments' frames joined in order."""
    parts = [apply_scorer(scorer, clip_errors(net, shift_image(np.asarray(s.frames), dy, dx, axes=(1, 2))))
             for s in held]
    return FrameScores(*(torch.cat(x) for x in zip(*parts, strict=True)))


def above_threshold_when_moved(net: Any, scorer: Scorer, held: list[Segment]) -> dict[str, float]:
    """{"dy,dx": share of held-out normal frames above the alert threshold} with every frame moved by
    each half-patch shift (:func:`held_out_moved`)."""
    assert scorer.calibration is not None
    threshold = scorer.calibration.threshold
    return {f"{dy},{dx}": float((held_out_moved(net, scorer, held, dy, dx).score.numpy() > threshold).mean())
            for dy, dx in grid_offsets(net.cfg, 4)[1:]}


@torch.no_grad()
def frames_per_second(net: Any, scorer: Any, frames: np.ndarray, batch: int = 8, repeats: int = 3) -> float:
    windows = torch.from_numpy(clip_windows(frames, np.arange(min(batch, len(frames)))))
    return time_fps(lambda: score_frames(net, windows, scorer), len(windows), repeats, min_seconds=0.0)


def validators(train: list[Segment], train_cfg: Any, seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
    """{name: (synthesizer, seed)}: the standard (training synthesizer), familiar and far validations
    (the rules read the first two; far, session 32, is reported beside them: it did not order four models
    as the development split does, benchmarks/RESULTS.md "A harder label-free validation")."""
    videos = [s.frames for s in train]
    return {"standard": (AnomalySynthesizer(videos, train_cfg.synthetic), seeds[0]),
            "familiar": (FamiliarObjects(videos, FAMILIAR), seeds[1]),
            "far": (FarObjects(videos, FAMILIAR), seeds[2])}


def stage(what: str) -> None:
    """A progress line on stderr (these measurements take minutes per option)."""
    print(f"  [{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def label_free_row(net: Any, held: list[Segment], synthesizers: dict[str, Any], train: list[Segment] | None = None,
                   whole_factor: float = FACTOR) -> tuple[Scorer, dict[str, Any], dict[str, dict[str, Any] | None]]:
    """The network's scorer refit on the held-out tails (as training fits it), its label-free measures
    (validation AUCs, false-alarm rate, threshold, frames/s, shares above threshold when moved) and, given
    the ``train`` segments the tails follow, speed_validation.py's measures, boxes ("speed", 2x) and whole
    frame ("whole_speed", ``whole_factor`` x): their samples returned third for paired comparisons, {name:
    measure or None where no held-out frame has frames enough on both sides}."""
    stage(f"fitting the scorer on {sum(len(s.frames) for s in held)} held-out frames")
    scorer, meta = fit_scorer_on_segments(net, held, progress=True)
    row: dict[str, Any] = {"false_alarm_rate": meta["calibration"]["false_alarm_rate"],
                           "threshold": meta["calibration"]["threshold"]}
    for name, (synth, seed) in synthesizers.items():
        stage(f"{name} synthetic validation")
        y, te, dis = synthetic_pairs(net, held, synth, seed=seed)
        row[f"{name}_auc"] = roc_auc(y, scorer(te, dis).score.numpy())
        if isinstance(synth, FarObjects):  # how many of its objects were far
            row[f"{name}_objects"], synth.drawn = synth.drawn, dict.fromkeys(synth.drawn, 0)
    speeds: dict[str, dict[str, Any] | None] = {}
    videos = None if train is None else full_videos(train, held)
    for name, whole, what, factor in (("speed", False, "walkers", FACTOR),
                                      ("whole_speed", True, "whole frames", whole_factor)):
        speed = None
        if videos is not None:
            stage(f"{name} validation (held-out {what} made {factor:g}x as fast)")
            try:
                speed = speed_measure(net, scorer, videos, factor=factor, whole=whole)
            except ValueError as e:  # footage too short for it: said, not measured
                print(f"  {name} validation not measured: {e}", file=sys.stderr)
        speeds[name] = speed
        row[f"{name}_auc"] = None if speed is None else speed["auc"]
        row[f"{name}_samples"] = None if speed is None else {
            k: speed[k] for k in ("centres", "positives", "negatives", "far")}
    stage("frames/s, then the held-out frames as if the camera had moved")
    row["frames_per_s"] = frames_per_second(net, scorer, np.asarray(held[0].frames))
    row["held_out_above_threshold_moved"] = above_threshold_when_moved(net, scorer, held)
    return scorer, row, speeds


def test_row(net: Any, scorer: Scorer, test: str, cache: Any, sigma: float) -> dict[str, Any]:
    """Development-split numbers of one scorer (reported, never used to choose)."""
    stage(f"scoring the test set {test}")
    raw = score_test_set(net, read_test_set(test)[1], cache, progress=True)
    results = {k: (y, apply_scorer(scorer, e)) for k, (y, e, _) in raw.items()}
    m = metrics_for(results, sigma, scorer.calibration.threshold if scorer.calibration else None)
    normal = np.concatenate([s.calibrated.numpy()[y == 0] for y, s in results.values()])
    return {"micro_raw": m["raw"]["micro_auc"], "micro_smoothed": m["smoothed"]["micro_auc"],
            "micro_online": m["online"]["micro_auc"], "macro": m["raw"]["macro_auc"],
            "per_video": m["raw"]["per_video_auc"], "normal_frames_above_threshold": float((normal >= ALERT).mean())}


def print_table(rows: dict[Any, dict[str, Any]], chosen: Any, label: str) -> None:
    test = any("test" in r for r in rows.values())
    print(f"\n{label:>9s} {'familiar':>9s} {'standard':>9s} {'far':>6s} {'speed':>6s} {'whole':>6s} "
          f"{'false alarms':>13s} {'moved 4 px, worst':>18s} {'frames/s':>9s}"
          + ("   test raw / smoothed / online   macro" if test else ""))
    for key, r in rows.items():
        moved = max(r["held_out_above_threshold_moved"].values())
        speed, whole = ("-" if r.get(k) is None else f"{100 * r[k]:.2f}" for k in ("speed_auc", "whole_speed_auc"))
        line = (f"{key!s:>9s} {100 * r['familiar_auc']:9.2f} {100 * r['standard_auc']:9.2f} {100 * r['far_auc']:6.2f} "
                f"{speed:>6s} {whole:>6s} {100 * r['false_alarm_rate']:12.1f}% {100 * moved:17.1f}% "
                f"{r['frames_per_s']:9.1f}")
        if "test" in r:
            t = r["test"]
            line += (f"   {100 * t['micro_raw']:5.1f} / {100 * t['micro_smoothed']:5.1f} / "
                     f"{100 * t['micro_online']:5.1f}     {100 * t['macro']:5.1f}")
        print(line + ("   <- chosen" if key == chosen else ""))


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--views", nargs="+", default=["1", "2", "4"], choices=["1", "2", "4", "1r", "2r", "4r"],
                   help="view options: a grid count, 'r' to score each grid reversed in time too")
    p.add_argument("--base", default="1", help="the option the others are judged against (one of --views)")
    args = p.parse_args()
    if args.base not in args.views:
        p.error(f"--views must include the base {args.base!r} (the rule compares against it)")
    net, _, train_cfg, cache, train, held = load(args.model, args.train)
    net.eval()
    base = net.cfg
    synthesizers = validators(train, train_cfg)
    rows: dict[str, dict[str, Any]] = {}
    scorers = {}
    for option in sorted(set(args.views), key=lambda o: (cost(o), o)):
        grids, reverse = parse_view(option)
        scoring = dataclasses.replace(base.scoring, grid_shifts=grids, time_reversal=reverse)
        net.cfg = dataclasses.replace(base, scoring=scoring)
        scorer, row, _ = label_free_row(net, held, synthesizers, train)
        rows[option], scorers[option] = row, (net.cfg, scorer)
        print(f"views {option}: {json.dumps(row)}", flush=True)
    chosen = choose(rows, args.base)  # label-free: decided before any test label is read
    print(f"chosen on the label-free measures: {chosen} (base {args.base})", flush=True)
    for option, (cfg, scorer) in scorers.items() if args.test else ():
        net.cfg = cfg
        rows[option]["test"] = test_row(net, scorer, args.test, cache, args.sigma)
    print_table(rows, chosen, "views")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "base": args.base, "chosen": chosen, "rows": rows},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
