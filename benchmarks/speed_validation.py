"""A label-free validation that asks about speed: the scene's own walkers, made twice as fast (session 36).

    python benchmarks/speed_validation.py --model model/weights/ped2 --train ../shared/data/ped2/train \
        [--gaps 2 3 4 5 6] [--factor 2] [--dev-auc 2=80.7 3=92.2 4=94.3 5=93.6 6=88.3] [--json FILE]
    python benchmarks/speed_validation.py --compare A.json B.json   # two models, paired on the same centres

The pasted validations (select_scoring.py, grid_scoring.py) move cut-out objects; none of them orders the
context gaps as the development split does (benchmarks/RESULTS.md, "A longer context gap"), whose
hardest case is a cyclist among walkers. Here nothing is pasted: for a held-out centre frame t of a
training video, each moving region (a connected component of max(|f(t-kg) - f(t)|, |f(t+kg) - f(t)|)
> 25 merged over 7x7 pixels, k = --factor, g the gap scored at; kg rounded half up when k is not
whole, session 47) gets frames t-kg and t+kg in place of
t-g and t+g inside its box grown by 4 pixels, so whatever moves there moves k times as fast; frame t
is untouched. Negatives are the same centres' clean windows. Centres: the held-out tail frames with
t + k * max(gaps) (rounded) inside the video (the same for every gap; the frames before the tail may serve as
context, the centre is always held out of training). At each gap the model's token statistics and
calibration are refit on the held-out tails first, as `aedmae calibrate --held-out-of TRAIN --set
model.scoring.context_gap=G` does. Reported: AUC per gap (the product's score), the paired AUC
difference of every gap against --base with a 95% bootstrap interval over centres, and with --dev-auc
the Spearman rank correlation of the AUCs with development-split AUCs given by hand (never read from
test labels here).

`--whole` (session 46) speeds up the whole frame instead of boxes: one positive per centre, the window
(t-kg, t, t+kg), so everything that moves moves k times as fast, with no box and no seam. Training's
temporal anomalies (`train.synthetic.temporal`) are built like the box measure, so this one is the judge
of models trained with them that is not built like their training (it still shares the idea: far
context frames). At k = 2 it leaves the shipped weights no room (100.00, session 46); `--factor 1.34`
(frames t-4 and t+4 at gap 3, a third faster) is session 47's harder form.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate_scoring import load

from model.config import with_scoring
from model.evaluation import fit_scorer_on_segments
from model.metrics import roc_auc
from model.scoring import token_errors
from model.synthetic import Box, moving_boxes
from model.window import clip_windows

FACTOR, SEED, REGIONS = 2, 13, 3
PAIRED = ("factor", "seed", "regions", "whole")  # what two reports must share for --compare to pair them
REACH = 12  # centres with 12 frames both ways: 2x gaps up to 6, the same 63 Ped2 centres for all of them


def full_videos(train: list[Any], held: list[Any]) -> dict[str, tuple[np.ndarray, int]]:
    """{video: (all its frames, index of its first held-out frame)} for each video with a held-out tail
    that follows its training head."""
    heads = {s.video: s for s in train}
    out = {}
    for tail in held:
        head = heads.get(tail.video)
        if head is not None and head.start + len(head.frames) == tail.start:
            out[tail.video] = (np.concatenate([np.asarray(head.frames), np.asarray(tail.frames)]), tail.start)
    return out


def moving_regions(frames: np.ndarray, t: int, reach: int, rng: np.random.Generator, most: int) -> list[Box]:
    """Up to ``most`` boxes (y0, y1, x0, x1) around what moves between t-reach, t and t+reach, in random
    order (:func:`model.synthetic.moving_boxes`, which training's temporal anomalies use too)."""
    return moving_boxes(frames[t - reach], frames[t], frames[t + reach], rng, most)


def far_offset(gap: int, factor: float) -> int:
    """How far from t the sped-up window's context frames lie: factor x gap frames, rounded half up (session 47:
    a factor need not be whole; 1.34 at gap 3 takes frames t-4 and t+4, a third faster)."""
    return int(factor * gap + 0.5)


def unmoved_gaps(gaps: list[int], factor: float) -> list[int]:
    """The gaps at which ``factor`` brings no context frame further (:func:`far_offset` <= the gap)."""
    return [g for g in gaps if far_offset(g, factor) <= g]


def faster(frames: np.ndarray, t: int, gap: int, far: int, box: Box | None) -> np.ndarray:
    """The window (t-gap, t, t+gap), (3, H, W, C) uint8, with frames t-far and t+far inside ``box``
    (far: :func:`far_offset` of the speed-up factor)."""
    window = clip_windows(frames, np.array([t]), gap)[0]  # the model's window (a fresh copy)
    if box is not None:
        y0, y1, x0, x1 = box
        window[0, y0:y1, x0:x1] = frames[t - far, y0:y1, x0:x1]
        window[2, y0:y1, x0:x1] = frames[t + far, y0:y1, x0:x1]
    return window


def centres_of(videos: dict[str, tuple[np.ndarray, int]], reach: int) -> list[tuple[str, int]]:
    """Held-out centre frames whose window reaches ``reach`` frames both ways inside the video."""
    return [(v, t) for v, (frames, first) in videos.items() for t in range(max(first, reach), len(frames) - reach)]


@torch.no_grad()
def speed_samples(net: Any, videos: dict[str, tuple[np.ndarray, int]], centres: list[tuple[str, int]], gap: int,
                  factor: float, seed: int, most: int, whole: bool = False,
                  ) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """(labels, centre index, raw teacher errors, raw discrepancies) of every clean window and sped-up region
    (``whole``: the whole frame is the one region of each centre)."""
    rng = np.random.default_rng(seed)
    windows, labels, owner = [], [], []
    far = far_offset(gap, factor)
    for i, (v, t) in enumerate(centres):
        frames = videos[v][0]
        regions = [(0, frames.shape[1], 0, frames.shape[2])] if whole else moving_regions(frames, t, far, rng, most)
        for box in [None, *regions]:
            windows.append(faster(frames, t, gap, far, box))
            labels.append(box is not None)
            owner.append(i)
    te, dis = [], []
    for start in range(0, len(windows), 16):
        e, d = token_errors(net, torch.from_numpy(np.stack(windows[start : start + 16])))
        te.append(e.float())
        dis.append(d.float())
    return np.array(labels), np.array(owner), torch.cat(te), torch.cat(dis)


def speed_measure(net: Any, scorer: Any, videos: dict[str, tuple[np.ndarray, int]], reach: int = REACH,
                  factor: float = FACTOR, seed: int = SEED, most: int = REGIONS, whole: bool = False) -> dict[str, Any]:
    """The speed validation of a network and its scorer at the network's gap: {"auc", "positives",
    "negatives", "centres", "far"} and the samples' "y", "owner", "score" (for :func:`bootstrap_difference`).
    Centres reach ``reach`` frames both ways (at least :func:`far_offset`), so that gaps compare on the same frames.
    ``whole``: the whole frame sped up (one positive per centre) rather than up to ``most`` moving boxes."""
    gap = net.cfg.scoring.context_gap
    far = far_offset(gap, factor)
    reach = max(reach, far)
    centres = centres_of(videos, reach)
    if not centres:
        raise ValueError(f"no held-out frame has {reach} frames on both sides")
    y, owner, te, dis = speed_samples(net, videos, centres, gap, factor, seed, most, whole)
    scores = scorer(te, dis)
    score = scores.score.numpy()
    return {"y": y, "owner": owner, "score": score, "auc": roc_auc(y, score), "positives": int(y.sum()),
            "negatives": int((~y).sum()), "centres": len(centres), "centre_frames": centres,
            "far": far,  # the sped-up context frames' distance from t
            # the score's two components alone, as `aedmae evaluate` reports them (teacher_error_only, ...)
            "teacher_error_only": roc_auc(y, scores.teacher_error.numpy()),
            "discrepancy_only": roc_auc(y, scores.discrepancy.numpy())}


def bootstrap_difference(a: dict[str, Any] | list[dict[str, Any]], b: dict[str, Any] | list[dict[str, Any]],
                         resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of AUC(a) - AUC(b) over centres resampled with replacement (each with its samples);
    ``a``/``b``: {"y", "owner", "score", "centre_frames"} of two measures on the same centres (their positives
    may differ), or lists of such draws, paired in order: then the interval is of the mean over draws of each
    draw's difference, every draw's centres resampled in each round."""
    draws = list(zip(a, b, strict=True)) if isinstance(a, list) and isinstance(b, list) else [(a, b)]
    rng = np.random.default_rng(seed)
    prepared = []
    for da, db in draws:
        if da["centre_frames"] != db["centre_frames"]:
            raise ValueError("the two measures were taken on different centre frames: they do not pair")
        n = int(max(da["owner"].max(), db["owner"].max())) + 1
        prepared.append((da, db, [np.flatnonzero(da["owner"] == i) for i in range(n)],
                         [np.flatnonzero(db["owner"] == i) for i in range(n)]))
    diffs = []
    for _ in range(resamples):
        round_ = []
        for da, db, rows_a, rows_b in prepared:
            pick = rng.integers(len(rows_a), size=len(rows_a))
            ia = np.concatenate([rows_a[i] for i in pick])
            ib = np.concatenate([rows_b[i] for i in pick])
            round_.append(roc_auc(da["y"][ia], da["score"][ia]) - roc_auc(db["y"][ib], db["score"][ib]))
        diffs.append(np.mean(round_))
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation (no ties expected: ties get the order of appearance)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def compare(path_a: str, path_b: str) -> None:
    """Print, per gap both reports measured, model A's speed AUC against model B's on the same centres
    (the paired 95% bootstrap interval of A - B)."""
    a, b = (json.loads(Path(f).read_text()) for f in (path_a, path_b))
    for report, f in ((a, path_a), (b, path_b)):
        if "centre_frames" not in report:
            raise SystemExit(f"{f}: written before reports kept their samples; measure it again with --json")
    # reports from before "regions" was recorded (2026-12-06) were all measured at the default
    for report in (a, b):
        report.setdefault("regions", REGIONS)
        report.setdefault("whole", False)  # and before --whole (2026-12-07)
    if [a[k] for k in PAIRED] != [b[k] for k in PAIRED]:
        raise SystemExit(f"{path_a} and {path_b} differ in --{', --'.join(PAIRED)}: they do not pair")
    print(f"A = {a['model']}, B = {b['model']} ({a['centres']} centres)")
    print(f"{'gap':>4s} {'A':>7s} {'B':>7s} {'A - B (95% CI)':>26s}")
    for gap in sorted(set(a["gaps"]) & set(b["gaps"]), key=int):
        ra, rb = ({"centre_frames": [tuple(c) for c in r["centre_frames"]]}
                  | {k: np.asarray(v) for k, v in r["gaps"][gap]["samples"].items()} for r in (a, b))
        try:
            lo, hi = bootstrap_difference(ra, rb)
        except ValueError as e:
            raise SystemExit(f"{path_a} and {path_b}, gap {gap}: {e}") from None
        diff = a["gaps"][gap]["auc"] - b["gaps"][gap]["auc"]
        print(f"{gap:>4s} {100 * a['gaps'][gap]['auc']:7.2f} {100 * b['gaps'][gap]['auc']:7.2f} "
              f"{f'{100 * diff:+6.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]':>26s}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--train", help="the training footage (its held-out tails are used)")
    p.add_argument("--gaps", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    p.add_argument("--base", type=int, default=3, help="the gap the others are compared with (one of --gaps)")
    p.add_argument("--factor", type=float, default=FACTOR,
                   help="how many times as fast the moving regions become (context frames round(F x gap) from t)")
    p.add_argument("--regions", type=int, default=REGIONS, help="sped-up regions per centre frame, at most")
    p.add_argument("--whole", action="store_true", help="speed up the whole frame (one positive per centre), not boxes")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--dev-auc", nargs="*", default=[], metavar="GAP=AUC",
                   help="development-split AUCs per gap, from earlier evaluations, to rank-correlate with")
    p.add_argument("--json", help="the report, with every sample's label, centre and score (for --compare)")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="instead of measuring: two models' reports (--json) on the same centres, paired per gap")
    args = p.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.model is None or args.train is None:
        p.error("--model and --train are required (unless --compare)")
    if args.base not in args.gaps or min(args.gaps) < 1:
        p.error("--base must be one of --gaps, gaps >= 1")
    if still := unmoved_gaps(args.gaps, args.factor):
        p.error(f"--factor {args.factor:g} moves no context frame at gap {still[0]}: round(F x gap) must exceed it")
    dev = {int(k): float(v) for k, v in (item.split("=", 1) for item in args.dev_auc)}
    from grid_scoring import stage  # here: grid_scoring imports this module

    net, _, _, _, train, held = load(args.model, args.train)
    net.eval()
    videos = full_videos(train, held)
    reach = max(far_offset(g, args.factor) for g in args.gaps)
    centres = centres_of(videos, reach)
    if not centres:
        p.error(f"no held-out frame of {args.train} has {reach} frames on both sides")
    stage(f"{len(centres)} held-out centre frames from {len(videos)} videos")
    base_cfg, rows = net.cfg, {}
    for gap in args.gaps:
        net.cfg = with_scoring(base_cfg, [f"context_gap={gap}"])
        stage(f"gap {gap}: refitting the scorer on the held-out tails")
        scorer, meta = fit_scorer_on_segments(net, held)
        stage(f"gap {gap}: clean and {args.factor:g}x faster windows")
        rows[gap] = speed_measure(net, scorer, videos, reach, args.factor, args.seed, args.regions, args.whole) | {
            "false_alarm_rate": meta["calibration"]["false_alarm_rate"]}
        print(f"gap {gap}: speed AUC {100 * rows[gap]['auc']:.2f} ({rows[gap]['positives']} sped-up regions, "
              f"{rows[gap]['negatives']} clean; teacher error only {100 * rows[gap]['teacher_error_only']:.2f}, "
              f"discrepancy only {100 * rows[gap]['discrepancy_only']:.2f})", flush=True)
    report: dict[str, Any] = {"model": args.model, "factor": args.factor, "seed": args.seed, "regions": args.regions,
                              "whole": args.whole, "centres": len(centres),
                              "centre_frames": centres, "base": args.base, "gaps": {}}
    print(f"\n{'gap':>4s} {'speed AUC':>10s} {'vs gap ' + str(args.base) + ' (95% CI)':>26s} {'dev AUC':>8s}")
    for gap, r in rows.items():
        lo, hi = bootstrap_difference(r, rows[args.base]) if gap != args.base else (0.0, 0.0)
        diff = r["auc"] - rows[args.base]["auc"]
        keys = ("auc", "teacher_error_only", "discrepancy_only", "positives", "negatives", "false_alarm_rate")
        report["gaps"][gap] = {k: r[k] for k in keys} | {
            "difference": diff, "difference_ci95": [lo, hi], "dev_auc": dev.get(gap),
            "samples": {"y": r["y"].tolist(), "owner": r["owner"].tolist(), "score": r["score"].tolist()}}
        ci = f"{100 * diff:+6.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" if gap != args.base else "-"
        print(f"{gap:4d} {100 * r['auc']:10.2f} {ci:>26s} {dev.get(gap, '-'):>8}")
    if len(dev) >= 3 and set(dev) <= set(rows):
        report["spearman_with_dev"] = spearman([rows[g]["auc"] for g in dev], list(dev.values()))
        print(f"Spearman rank correlation with the development split over gaps {sorted(dev)}: "
              f"{report['spearman_with_dev']:+.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
