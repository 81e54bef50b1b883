"""Does a detection depend on where an object sits on the token grid? The teacher's anomaly-map head
(trained on pasted objects) and the student (which only ever predicts "normal" there) make most of
the discrepancy on abnormal frames; this measures how often that head fires, and what the scores are
worth, when the frames are shifted by half a token, which should not change whether a frame is abnormal.

    python benchmarks/grid_phase.py --model CKPT --train ../shared/data/ped2/train \
        [--test ../shared/data/ped2] [--json FILE]

Per shift of the frames (down/right by 0 or half a patch, edges repeated):
  * label-free, on the held-out normal tails of the training videos: the share of frames above the
    checkpoint's alert threshold (about 1 - its calibration quantile unshifted) and the synthetic
    validation AUC (the same frames with pasted objects);
  * with --test: micro AUC raw and smoothed (reported, never used to choose);
  * the share of frames whose teacher anomaly map fires (its maximum over the frame > 0, the midpoint
    of its -1..+1 target) on held-out frames and on normal and abnormal test frames, frames firing in
    any shift, and what share of the scored discrepancy (its top-k tokens, unshifted) comes from the
    anomaly-map channel.
A checkpoint that scores several grids (model.scoring.grid_shifts > 1) is measured on one grid, its
token statistics and calibration refit on the held-out tails as training fits them. What averaging
the grids is worth: benchmarks/grid_scoring.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate_scoring import arguments, load

from model.dataset import Segment, shift_image
from model.datasets import read_test_set
from model.evaluation import fit_scorer_on_segments, scorer_from_meta, synthetic_validation
from model.masking import inference_keep
from model.metrics import gaussian_smooth, roc_auc
from model.scoring import Scorer, errors_of, grid_offsets, reconstruct
from model.synthetic import AnomalySynthesizer
from model.window import clip_windows


def shift(frames: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Frames (N, H, W, C) moved down by dy and right by dx pixels, the top/left edge repeated."""
    return shift_image(frames, dy, dx, axes=(1, 2))


def one_grid_scorer(net: Any, meta: dict[str, Any], held: list[Segment]) -> Scorer:
    """The checkpoint's scorer when it scores one grid; otherwise the network set to one grid and a
    scorer refit on the held-out tails (as training fits it)."""
    if net.cfg.scoring.views == 1:
        return scorer_from_meta(net, meta)
    net.cfg = replace(net.cfg, scoring=net.cfg.scoring.one_view())
    return fit_scorer_on_segments(net, held)[0]


@torch.no_grad()
def map_and_share(net: Any, scorer: Scorer, frames: np.ndarray,
                  batch: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: the teacher anomaly map's maximum, the anomaly-map channel's share of the
    discrepancy summed over the scorer's top-k tokens (token-normalised as the scorer does), and the
    frame's score."""
    keep, channels = inference_keep(net.cfg), net.cfg.channels
    peaks, shares, scores = [], [], []
    for start in range(0, len(frames), batch):
        centres = np.arange(start, min(start + batch, len(frames)))
        windows = torch.from_numpy(clip_windows(frames, centres))
        teacher, student = reconstruct(net, windows, keep)
        scores.append(scorer(*errors_of(net, windows, teacher, student)).score.numpy())
        t = teacher.view(*teacher.shape[:2], -1, channels + 1)
        d = (t - student.view_as(t)).pow(2)
        values = d.shape[2] * d.shape[3]
        total = d.sum((2, 3)) / values * scorer.discrepancy_scale
        amap = d[..., channels].sum(2) / values * scorer.discrepancy_scale
        top = total.topk(scorer.topk, dim=1).indices
        shares.append((amap.gather(1, top).sum(1) / total.gather(1, top).sum(1).clamp(min=1e-12)).numpy())
        peaks.append(t[..., channels].amax((1, 2)).numpy())
    return np.concatenate(peaks), np.concatenate(shares), np.concatenate(scores)


def per_shift_table(shifts: list[tuple[int, int]], rows: list[dict[str, Any]]) -> None:
    print(f"{'shift':8s} {'held-out above threshold':>25s} {'synthetic validation':>21s} "
          f"{'test micro raw':>15s} {'smoothed':>9s}")
    for (dy, dx), r in zip(shifts, rows, strict=True):
        test = (f"{100 * r['test_micro_raw']:15.1f} {100 * r['test_micro_smoothed']:9.1f}"
                if "test_micro_raw" in r else "")
        above = r["held_out_above_threshold"]
        print(f"({dy},{dx}){'':3s} {'-' if above is None else f'{100 * above:.1f}%':>25s} "
              f"{100 * r['synthetic_validation_auc']:21.1f} {test}")


def accuracy(held: list[np.ndarray], test: list[tuple[np.ndarray, np.ndarray]], threshold: float | None,
             sigma: float) -> dict[str, Any]:
    """From per-clip scores: the held-out share above the threshold and, with test clips
    [(labels, scores)], the test micro AUC raw and smoothed."""
    held_scores = np.concatenate(held)
    out: dict[str, Any] = {
        "held_out_above_threshold": None if threshold is None else float((held_scores > threshold).mean())}
    if test:
        labels = np.concatenate([y for y, _ in test])
        out["test_micro_raw"] = roc_auc(labels, np.concatenate([s for _, s in test]))
        out["test_micro_smoothed"] = roc_auc(labels, np.concatenate(
            [gaussian_smooth(s.astype(np.float64), sigma) for _, s in test]))
    return out


def main() -> None:
    args = arguments(__doc__).parse_args()
    net, meta, train_cfg, cache, train, held = load(args.model, args.train)
    net.eval()
    scorer = one_grid_scorer(net, meta, held)
    shifts = grid_offsets(net.cfg, 4)
    clips: list[tuple[str, np.ndarray, np.ndarray]] = [
        ("held-out normal (training tails)", np.asarray(s.frames), np.zeros(len(s.frames), bool)) for s in held]
    if args.test:
        _, videos = read_test_set(args.test)
        for v in videos:
            frames = cache.load(v.source, net.cfg.image_size, net.cfg.channels)
            clips.append(("test", frames, np.asarray(v.labels).astype(bool)))
    fired: dict[str, list[np.ndarray]] = {}
    share: dict[str, list[np.ndarray]] = {}
    scored: dict[str, list[list[tuple[np.ndarray, np.ndarray]]]] = {"held": [], "test": []}
    for kind, frames, labels in clips:
        measured = [map_and_share(net, scorer, shift(frames, dy, dx)) for dy, dx in shifts]
        fires = np.stack([m[0] > 0 for m in measured], 1)  # (N, shifts)
        base_share = measured[0][1]  # shifts[0] is the unshifted grid
        scored["test" if kind == "test" else "held"].append([(labels, m[2]) for m in measured])
        groups = {kind: np.ones(len(labels), bool)} if kind != "test" else \
            {"test, normal": ~labels, "test, abnormal": labels}
        for name, sel in groups.items():
            fired.setdefault(name, []).append(fires[sel])
            share.setdefault(name, []).append(base_share[sel])
    rows: dict[str, dict[str, Any]] = {}
    for name, parts in fired.items():
        f = np.concatenate(parts)
        if not len(f):
            continue
        rows[name] = {"frames": len(f), "fires_per_shift": [float(x) for x in f.mean(0)],
                      "fires_in_any_shift": float(f.any(1).mean()),
                      "shifts_disagree": float((f.any(1) & ~f.all(1)).mean()),
                      "map_share_of_discrepancy_median": float(np.median(np.concatenate(share[name])))}
    threshold = scorer.calibration.threshold if scorer.calibration else None
    synth = AnomalySynthesizer([s.frames for s in train], train_cfg.synthetic)
    per_shift: list[dict[str, Any]] = []
    for k, (dy, dx) in enumerate(shifts):
        moved = [Segment(s.video, shift(np.asarray(s.frames), dy, dx), s.start) for s in held]
        row = accuracy([clip[k][1] for clip in scored["held"]], [clip[k] for clip in scored["test"]], threshold,
                       args.sigma)
        row["synthetic_validation_auc"] = synthetic_validation(net, moved, synth, {"score": scorer})["score"]
        per_shift.append(row)
    per_shift_table(shifts, per_shift)
    head = " / ".join(f"({dy},{dx})" for dy, dx in shifts)
    print(f"\n{'frames':34s} {'n':>5s}  fires at shifts {head}  any   disagree  map share")
    for name, r in rows.items():
        per = " / ".join(f"{100 * x:5.1f}" for x in r["fires_per_shift"])
        print(f"{name:34s} {r['frames']:5d}  {per:>38s}  {100 * r['fires_in_any_shift']:5.1f} "
              f"{100 * r['shifts_disagree']:7.1f}   {r['map_share_of_discrepancy_median']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "shifts": shifts, "per_shift": per_shift,
                                               "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
