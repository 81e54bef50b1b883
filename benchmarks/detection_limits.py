"""How small an anomaly a model sees: the "far" validation (benchmarks/select_scoring.py: people cut from
the far half of the training footage, pasted upright where and as big as the camera saw them, moving
sideways at 0.45-1.5% of the frame width a frame) split by the pasted object's height.

    python benchmarks/detection_limits.py --model CKPT --train ../shared/data/ped2/train \
        [--seed 12] [--frames 256] [--json FILE]

For each height band (pixels at the model's resolution, and as a share of the frame height): the AUC of
telling the held-out normal frames (all of them) from the frames with such an object pasted, and the
share of those frames whose calibrated score reaches the alert threshold (one frame, unsmoothed; the
held-out normal frames' own share is the first row). The model's stored scorer and calibration are used,
as the service uses them. Label-free: no test data is read.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate_scoring import load
from select_scoring import FAMILIAR, FarObjects

from model.dataset import TrainingClips
from model.evaluation import scorer_from_meta, synthetic_pairs
from model.metrics import roc_auc

BANDS = (0.0, 0.06, 0.08, 0.11, 0.15, 1.0)  # object height / frame height


def pasted_heights(held: list[Any], synthesizer: Any, seed: int, frames: int) -> np.ndarray:
    """Rows the pasted object covers in frame t of each pasted sample, in synthetic_pairs's order."""
    clips = TrainingClips(held, synthesizer, fraction=1.0, seed=seed)
    idx = np.random.default_rng(seed).choice(len(clips), size=min(frames, len(clips)), replace=False)
    heights = []
    for i in idx:
        rows = np.flatnonzero(clips[int(i)]["mask"][0].numpy().any(axis=1))
        heights.append(rows[-1] - rows[0] + 1 if rows.size else 0)
    return np.array(heights)


def bands(y: np.ndarray, calibrated: np.ndarray, heights: np.ndarray, frame_height: int) -> list[dict[str, Any]]:
    normal, pasted = calibrated[y == 0], calibrated[y == 1]
    rows: list[dict[str, Any]] = [{"band": "held-out normal frames", "frames": int(normal.size),
                                   "above_threshold": float((normal >= 0.5).mean())}]
    share = heights / frame_height
    for lo, hi in itertools.pairwise(BANDS):
        sel = (share >= lo) & ((share < hi) | (hi == BANDS[-1]))
        if not sel.any():
            continue
        px = heights[sel]
        rows.append({"band": f"{100 * lo:g}-{100 * hi:g}% of the height", "min_share": lo, "max_share": hi,
                     "pixels": [int(px.min()), int(px.max())], "frames": int(sel.sum()),
                     "auc": roc_auc(np.r_[np.zeros(normal.size), np.ones(sel.sum())], np.r_[normal, pasted[sel]]),
                     "above_threshold": float((pasted[sel] >= 0.5).mean())})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True, help="the model's training footage (its held-out tails are used)")
    p.add_argument("--seed", type=int, default=12, help="the far validation's draw (candidates.py's default)")
    p.add_argument("--frames", type=int, default=256, help="held-out frames drawn, at most")
    p.add_argument("--json")
    args = p.parse_args()
    net, meta, _, _, train, held = load(args.model, args.train)
    net.eval()
    scorer = scorer_from_meta(net, meta)
    if scorer.calibration is None:
        p.error(f"{args.model} has no calibration: run `aedmae calibrate` first")
    videos = [s.frames for s in train]
    print(f"scoring {min(args.frames, sum(len(s.frames) for s in held))} held-out frames, clean and with a far "
          "object pasted", file=sys.stderr, flush=True)
    y, te, dis = synthetic_pairs(net, held, FarObjects(videos, FAMILIAR), seed=args.seed, max_frames=args.frames)
    heights = pasted_heights(held, FarObjects(videos, FAMILIAR), args.seed, args.frames)
    calibrated = scorer(te, dis).calibrated.numpy()
    height = net.cfg.image_size[0]
    rows = bands(y, calibrated, heights, height)
    overall = roc_auc(y, calibrated)
    print(f"\n{args.model} at {height}x{net.cfg.image_size[1]}: far validation AUC {100 * overall:.2f}")
    print(f"{'object height':>26s} {'pixels':>8s} {'frames':>7s} {'AUC':>6s} {'at/above threshold':>19s}")
    for r in rows:
        px = f"{r['pixels'][0]}-{r['pixels'][1]}" if "pixels" in r else ""
        auc = f"{100 * r['auc']:6.1f}" if "auc" in r else ""
        print(f"{r['band']:>26s} {px:>8s} {r['frames']:7d} {auc:>6s} {100 * r['above_threshold']:18.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "seed": args.seed, "image_size": net.cfg.image_size,
                                               "far_auc": overall, "bands": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
