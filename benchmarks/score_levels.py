"""Where normal frames' score levels sit: per training video (the frames it trained on and its held-out
tail), and the normal frames of a labelled test set, beside each video's motion energy.

    python benchmarks/score_levels.py --model CKPT --train ../shared/data/ped2/train \
        [--test ../shared/data/ped2] [--moved | --moved-only] [--json FILE]

Pooled (micro) AUC and a single alert threshold both need normal frames to score alike in every video.
This prints, per video, the median and 90th percentile of the model's score on normal frames and the
mean |frame t-1 - frame t+1| (how much moves: a crowd moves more than an empty walkway), so a level
that follows the crowd rather than the anomaly is visible. Test labels only select the normal frames.

`--moved` (session 47) asks which part of the score a moved camera lifts: the held-out tails moved by
each half-patch shift (edges repeated, as candidates.py's moved-camera condition moves them), with the
share above the alert threshold and, per frame against the same frame unmoved, the median ratio of the
score and of each of its two components (teacher error, discrepancy). `--moved-only` skips the
per-video levels (scoring every training frame: 11 of the 14 minutes on this CPU).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate_scoring import arguments, load
from grid_scoring import held_out_moved

from model.datasets import read_test_set
from model.evaluation import apply_scorer, clip_errors, scorer_from_meta
from model.scoring import FrameScores, grid_offsets


def motion_energy(frames: np.ndarray) -> np.ndarray:
    """Per frame t of a clip (N, H, W, C) uint8: mean |frame t-1 - frame t+1| in grey levels, edges clamped."""
    f = np.asarray(frames, dtype=np.float32)
    idx = np.arange(len(f))
    before, after = np.clip(idx - 1, 0, len(f) - 1), np.clip(idx + 1, 0, len(f) - 1)
    return np.abs(f[after] - f[before]).reshape(len(f), -1).mean(1)


def level(scores: np.ndarray) -> dict[str, float]:
    return {"frames": len(scores), "median": float(np.median(scores)), "q90": float(np.quantile(scores, 0.9))}


def moved_rise(still: FrameScores, moved: FrameScores, threshold: float) -> dict[str, float]:
    """Share of the moved frames above ``threshold`` and the median per-frame ratio moved / still of the
    score and its components."""
    out = {"above_threshold": float((moved.score.numpy() > threshold).mean())}
    for part in ("score", "teacher_error", "discrepancy"):
        out[f"{part}_ratio"] = float(np.median(getattr(moved, part).numpy() / getattr(still, part).numpy()))
    return out


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--moved", action="store_true", help="the held-out tails with the camera moved half a patch")
    p.add_argument("--moved-only", action="store_true", help="--moved without the per-video levels")
    args = p.parse_args()
    args.moved = args.moved or args.moved_only
    net, meta, _, cache, train, held = load(args.model, args.train)
    scorer = scorer_from_meta(net, meta)
    threshold = (meta.get("calibration") or {}).get("threshold")
    if args.moved and threshold is None:  # before minutes of scoring, not after
        p.error(f"{args.model} has no calibration: run `aedmae calibrate` first")

    def scores(frames: np.ndarray) -> np.ndarray:
        return apply_scorer(scorer, clip_errors(net, np.asarray(frames))).score.numpy()

    rows: list[dict[str, Any]] = []
    # the unmoved held-out tails, scored once: the moved rows' reference and the per-video tails' levels
    per_video_tails = held is not train and not args.moved_only
    still = held_out_moved(net, scorer, held, 0, 0) if args.moved or per_video_tails else None
    tails: dict[str, np.ndarray] = {}  # video: its held-out tail's scores
    if per_video_tails and still is not None:
        cuts = np.cumsum([len(s.frames) for s in held])[:-1]
        tails = dict(zip((s.video for s in held), np.split(still.score.numpy(), cuts), strict=True))
    for seg in [] if args.moved_only else train:
        row = {"set": "train", "video": seg.video, "motion": float(motion_energy(seg.frames).mean()),
               "trained": level(scores(seg.frames))}
        if seg.video in tails:
            row["held_out"] = level(tails[seg.video])
        rows.append(row)
    if args.test and not args.moved_only:
        _, videos = read_test_set(args.test)
        for v in videos:
            normal = v.labels == 0
            if not normal.any():
                continue
            frames = cache.load(v.source, net.cfg.image_size, net.cfg.channels)
            s = scores(frames)  # score the whole clip (context), keep the normal frames
            rows.append({"set": "test", "video": v.name, "motion": float(motion_energy(frames)[normal].mean()),
                         "normal": level(s[normal])})
    print(f"alert threshold (raw score): {threshold}")
    print("set    video  motion   median   q90  (trained frames | held-out tail | normal test frames)")
    for r in rows:
        parts = [f"{r[k]['median']:8.2f} {r[k]['q90']:6.2f}" for k in ("trained", "held_out", "normal") if k in r]
        print(f"{r['set']:6s} {r['video']:6s} {r['motion']:6.2f} " + " | ".join(parts))
    moved: dict[str, dict[str, float]] = {}
    if args.moved and still is not None:
        for dy, dx in grid_offsets(net.cfg, 4)[1:]:
            moved[f"{dy},{dx}"] = moved_rise(still, held_out_moved(net, scorer, held, dy, dx), threshold)
        print("\nheld-out tails, camera moved (dy,dx px): above threshold; median ratio to the same frame unmoved "
              "of score / teacher error / discrepancy")
        for k, m in moved.items():
            print(f"  {k:>5s}: {100 * m['above_threshold']:5.1f}%  x{m['score_ratio']:.2f} / "
                  f"x{m['teacher_error_ratio']:.2f} / x{m['discrepancy_ratio']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"threshold": threshold, "rows": rows, "moved": moved}, indent=2) + "\n")


if __name__ == "__main__":
    main()
