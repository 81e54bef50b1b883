"""Does a detection depend on where an object sits on the token grid? The teacher's anomaly-map head
(trained on pasted objects) and the student (which only ever predicts "normal" there) make most of
the discrepancy on abnormal frames; this measures how often that head fires when the frames are
shifted by half a token, which should not change whether a frame is abnormal.

    python benchmarks/grid_phase.py --model CKPT --train ../shared/data/ped2/train \
        [--test ../shared/data/ped2] [--json FILE]

Per shift of the frames (down/right by 0 or half a patch, edges repeated): the share of frames whose
teacher anomaly map fires (its maximum over the frame > 0, the midpoint of its -1..+1 target) on the
held-out normal tails of the training videos and, with --test, on normal and abnormal test frames;
frames firing in any shift; and what share of the scored discrepancy (its top-k tokens, unshifted)
comes from the anomaly-map channel. Test labels only split frames into normal and abnormal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate_scoring import arguments, load

from model.datasets import read_test_set
from model.evaluation import scorer_from_meta
from model.masking import inference_keep
from model.scoring import Scorer, reconstruct
from model.window import clip_windows


def shift(frames: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Frames (N, H, W, C) moved down by dy and right by dx pixels, the top/left edge repeated."""
    h, w = frames.shape[1:3]
    return np.pad(frames, ((0, 0), (dy, 0), (dx, 0), (0, 0)), mode="edge")[:, :h, :w]


@torch.no_grad()
def map_and_share(net: Any, scorer: Scorer, frames: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the teacher anomaly map's maximum, and the anomaly-map channel's share of the
    discrepancy summed over the scorer's top-k tokens (token-normalised as the scorer does)."""
    keep, channels = inference_keep(net.cfg), net.cfg.channels
    peaks, shares = [], []
    for start in range(0, len(frames), batch):
        centres = np.arange(start, min(start + batch, len(frames)))
        teacher, student = reconstruct(net, torch.from_numpy(clip_windows(frames, centres)), keep)
        t = teacher.view(*teacher.shape[:2], -1, channels + 1)
        d = (t - student.view_as(t)).pow(2)
        values = d.shape[2] * d.shape[3]
        total = d.sum((2, 3)) / values * scorer.discrepancy_scale
        amap = d[..., channels].sum(2) / values * scorer.discrepancy_scale
        top = total.topk(scorer.topk, dim=1).indices
        shares.append((amap.gather(1, top).sum(1) / total.gather(1, top).sum(1).clamp(min=1e-12)).numpy())
        peaks.append(t[..., channels].amax((1, 2)).numpy())
    return np.concatenate(peaks), np.concatenate(shares)


def main() -> None:
    args = arguments(__doc__).parse_args()
    net, meta, _, cache, _, held = load(args)
    net.eval()
    scorer = scorer_from_meta(net, meta)
    half = net.cfg.patch_size // 2
    shifts = [(0, 0), (0, half), (half, 0), (half, half)]
    clips: list[tuple[str, np.ndarray, np.ndarray]] = [
        ("held-out normal (training tails)", np.asarray(s.frames), np.zeros(len(s.frames), bool)) for s in held]
    if args.test:
        _, videos = read_test_set(args.test)
        for v in videos:
            frames = cache.load(v.source, net.cfg.image_size, net.cfg.channels)
            clips.append(("test", frames, np.asarray(v.labels).astype(bool)))
    fired: dict[str, list[np.ndarray]] = {}
    share: dict[str, list[np.ndarray]] = {}
    for kind, frames, labels in clips:
        measured = [map_and_share(net, scorer, shift(frames, dy, dx)) for dy, dx in shifts]
        fires = np.stack([peak > 0 for peak, _ in measured], 1)  # (N, shifts)
        base_share = measured[0][1]  # shifts[0] is the unshifted grid
        groups = {kind: np.ones(len(labels), bool)} if kind != "test" else \
            {"test, normal": ~labels, "test, abnormal": labels}
        for name, sel in groups.items():
            fired.setdefault(name, []).append(fires[sel])
            share.setdefault(name, []).append(base_share[sel])
    rows = {}
    for name, parts in fired.items():
        f = np.concatenate(parts)
        if not len(f):
            continue
        rows[name] = {"frames": len(f), "fires_per_shift": [float(x) for x in f.mean(0)],
                      "fires_in_any_shift": float(f.any(1).mean()),
                      "shifts_disagree": float((f.any(1) & ~f.all(1)).mean()),
                      "map_share_of_discrepancy_median": float(np.median(np.concatenate(share[name])))}
    head = " / ".join(f"({dy},{dx})" for dy, dx in shifts)
    print(f"{'frames':34s} {'n':>5s}  fires at shifts {head}  any   disagree  map share")
    for name, r in rows.items():
        per = " / ".join(f"{100 * x:5.1f}" for x in r["fires_per_shift"])
        print(f"{name:34s} {r['frames']:5d}  {per:>38s}  {100 * r['fires_in_any_shift']:5.1f} "
              f"{100 * r['shifts_disagree']:7.1f}   {r['map_share_of_discrepancy_median']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "shifts": shifts, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
