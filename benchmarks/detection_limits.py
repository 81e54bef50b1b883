"""How small and how slow an anomaly a model sees: the "far" validation (benchmarks/select_scoring.py:
people cut from the far half of the training footage, pasted upright where and as big as the camera saw
them, moving sideways at 0.45-1.5% of the frame width a frame) split by the pasted object's height, then
by its speed; or, with `--validation familiar` (session 47), the familiar one that candidates.py's rules
read (people from the footage with their own look, 8-20% of the frame tall, anywhere, at the same speeds).

    python benchmarks/detection_limits.py --model CKPT --train ../shared/data/ped2/train \
        [--validation far|familiar] [--seed 12] [--frames 256] [--json FILE]

For each band (height as a share of the frame height, with its pixels at the model's resolution; speed
as a share of the frame width a frame, with its pixels a frame): the AUC of telling the held-out normal
frames (all of them) from the frames with such an object pasted, and the share of those frames whose
calibrated score reaches the alert threshold (one frame, unsmoothed; the held-out normal frames' own
share comes first). For scale, the speeds of the footage's own people in the far half (blobs matched
3 frames apart), as quartiles. The model's stored scorer and calibration are used, as the service uses them.
Label-free: no test data is read.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate_scoring import load
from select_scoring import FAMILIAR, FamiliarObjects, FarObjects

from model.calibration import ALERT
from model.evaluation import scorer_from_meta, synthetic_pairs
from model.metrics import roc_auc

HEIGHTS = (0.0, 0.06, 0.08, 0.11, 0.15, 1.0)  # object height / frame height
SPEEDS = (0.0, 0.008, 0.0115, 1.0)  # object speed / frame width, a frame (far draws 0.0045-0.015: thirds)


SEEDS = {"far": 12, "familiar": 11}  # candidates.py's default draws


class PastedObjects:
    """Collects (height in rows in frame t, speed in pixels a frame) of each object synthetic_pairs pastes,
    as it is drawn (its ``observe``)."""

    def __init__(self, synthesizer: Any) -> None:
        self.synthesizer = synthesizer
        self.heights: list[int] = []
        self.speeds: list[float] = []

    def __call__(self, sample: dict[str, Any]) -> None:
        rows = np.flatnonzero(sample["mask"][0].numpy().any(axis=1))
        self.heights.append(int(rows[-1] - rows[0] + 1) if rows.size else 0)
        motion = self.synthesizer.last_motion
        self.speeds.append(math.hypot(motion.vx, motion.vy))


def walker_speeds(synthesizer: Any, pairs: int = 400, step: int = 3, seed: int = 0) -> np.ndarray:
    """Speeds (pixels a frame) of the footage's own people in the far half, as the far objects are cut:
    each far blob's box centre matched to the nearest blob's ``step`` frames later, within 5% of the frame
    width (people who stand still count, at about 0; merged or split groups add noise, so read the median)."""
    rng = np.random.default_rng(seed)
    radius = 0.05 * synthesizer.width
    speeds: list[float] = []
    long_enough = [v for v, video in enumerate(synthesizer.videos) if len(video) > step]
    for _ in range(pairs if long_enough else 0):
        v = long_enough[int(rng.integers(len(long_enough)))]
        i = int(rng.integers(len(synthesizer.videos[v]) - step))
        now = [(x + w / 2, y + h / 2) for _, (x, y, w, h) in synthesizer.foreground(v, i)[2]
               if synthesizer.is_far((x, y, w, h))]
        later = np.array([(x + w / 2, y + h / 2) for _, (x, y, w, h) in synthesizer.foreground(v, i + step)[2]])
        for cx, cy in now if len(later) else ():
            d = np.hypot(later[:, 0] - cx, later[:, 1] - cy).min()
            if d <= radius:
                speeds.append(d / step)
    return np.array(speeds)


def normal_row(y: np.ndarray, calibrated: np.ndarray) -> dict[str, Any]:
    normal = calibrated[y == 0]
    return {"band": "held-out normal frames", "frames": int(normal.size),
            "above_threshold": float((normal >= ALERT).mean())}


def bands(y: np.ndarray, calibrated: np.ndarray, values: np.ndarray, scale: float,
          edges: tuple[float, ...]) -> list[dict[str, Any]]:
    """One row per band of ``values / scale`` between successive ``edges`` (the last band closed)."""
    normal, pasted = calibrated[y == 0], calibrated[y == 1]
    share = values / scale
    rows = []
    for lo, hi in itertools.pairwise(edges):
        sel = (share >= lo) & ((share < hi) | (hi == edges[-1]))
        if not sel.any():
            continue
        v = values[sel]
        rows.append({"band": f"{100 * lo:g}-{100 * hi:g}%", "min_share": lo, "max_share": hi,
                     "range": [round(float(v.min()), 2), round(float(v.max()), 2)], "frames": int(sel.sum()),
                     "auc": roc_auc(np.r_[np.zeros(normal.size), np.ones(sel.sum())], np.r_[normal, pasted[sel]]),
                     "above_threshold": float((pasted[sel] >= ALERT).mean())})
    return rows


def print_bands(title: str, unit: str, normal: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print(f"\n{title:>26s} {unit:>11s} {'frames':>7s} {'AUC':>6s} {'at/above threshold':>19s}")
    print(f"{normal['band']:>26s} {'':>11s} {normal['frames']:7d} {'':>6s} {100 * normal['above_threshold']:18.1f}%")
    for r in rows:
        span = f"{r['range'][0]:g}-{r['range'][1]:g}"
        auc, above = 100 * r["auc"], 100 * r["above_threshold"]
        print(f"{r['band']:>26s} {span:>11s} {r['frames']:7d} {auc:6.1f} {above:18.1f}%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True, help="the model's training footage (its held-out tails are used)")
    p.add_argument("--validation", choices=sorted(SEEDS), default="far", help="which pasted validation to split")
    p.add_argument("--seed", type=int, help="the validation's draw (default candidates.py's: far 12, familiar 11)")
    p.add_argument("--frames", type=int, default=256, help="held-out frames drawn, at most")
    p.add_argument("--json")
    args = p.parse_args()
    net, meta, _, _, train, held = load(args.model, args.train)
    net.eval()
    scorer = scorer_from_meta(net, meta)
    if scorer.calibration is None:
        p.error(f"{args.model} has no calibration: run `aedmae calibrate` first")
    videos = [s.frames for s in train]
    seed = SEEDS[args.validation] if args.seed is None else args.seed
    print(f"scoring {min(args.frames, sum(len(s.frames) for s in held))} held-out frames, clean and with a "
          f"{args.validation} object pasted", file=sys.stderr, flush=True)
    # one instance: the videos' median backgrounds are computed once
    synth = (FarObjects if args.validation == "far" else FamiliarObjects)(videos, FAMILIAR)
    pasted = PastedObjects(synth)
    y, te, dis = synthetic_pairs(net, held, synth, seed=seed, max_frames=args.frames, observe=pasted)
    heights, speeds = np.array(pasted.heights), np.array(pasted.speeds)
    calibrated = scorer(te, dis).calibrated.numpy()
    height, width = net.cfg.image_size
    normal = normal_row(y, calibrated)
    by_height = bands(y, calibrated, heights, height, HEIGHTS)
    by_speed = bands(y, calibrated, speeds, width, SPEEDS)
    overall = roc_auc(y, calibrated)
    print(f"\n{args.model} at {height}x{width}: {args.validation} validation AUC {100 * overall:.2f}")
    print_bands("height, share of the frame", "rows", normal, by_height)
    print_bands("speed, width a frame", "px a frame", normal, by_speed)
    report = {"model": args.model, "validation": args.validation, "seed": seed, "image_size": [height, width],
              f"{args.validation}_auc": overall, "normal": normal, "by_height": by_height, "by_speed": by_speed}
    if isinstance(synth, FarObjects):  # for scale: how fast the far half's own people walk
        walkers = walker_speeds(synth)
        report["walker_speed_quartiles"] = quartiles = [
            round(float(q), 2) for q in np.percentile(walkers, [25, 50, 75])] if walkers.size else []
        print(f"\nthe footage's own people in the far half ({walkers.size} matched blobs): "
              f"{' / '.join(map(str, quartiles)) or '-'} pixels a frame (quartiles)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
