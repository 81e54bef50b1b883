"""Where the cameras' scene-cut check (model.cuts.CutDetector) draws its line: the picture
change between consecutive frames of real footage, at the served model's resolution, against that
between frames of two different scenes.

    python benchmarks/scene_cuts.py [--data ../shared/data] [--model DIR] [--quick] [--json FILE]

Rows: consecutive frames of every video (Ped2 train and test, the Avenue footage) sampled every
1, 5 and 25 frames (25, 5 and 1 frames/s at Ped2's and Avenue's 25 fps: what `fps` on a camera
does); frames of different videos of one scene (Ped2 with Ped2, Avenue with Avenue: a splice, not a
cut in the scene); and frames of the two scenes against each other (a cut). Each row gives the
smallest, the median, the 99.9% quantile and the largest change, and the share the check calls a
cut at the server's default `scene_cut_change`. A frame of another scene must rise above it; a
consecutive frame of one scene must not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.bundle import load_bundle
from model.cuts import MAX_CHANGE, CutDetector, picture_change
from model.frames import discover, read_frames, to_model_frame
from model.shipped import SHIPPED_DIR

ROOT = Path(__file__).resolve().parents[1]


def summary(values: list[float], threshold: float) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return {"pairs": int(v.size), "min": round(float(v.min()), 4), "median": round(float(np.median(v)), 4),
            "q999": round(float(np.quantile(v, 0.999)), 4), "max": round(float(v.max()), 4),
            "cut_share": round(float((v > threshold).mean()), 4)}


def load_videos(data: Path, size: tuple[int, int], channels: int, limit: int) -> dict[str, dict[str, list]]:
    """{scene: {video: [model-size frames]}} for Ped2 (train and test) and the Avenue footage."""
    roots = {"ped2": [data / "ped2" / "train", data / "ped2" / "test"], "avenue": [data / "footage"]}
    scenes: dict[str, dict[str, list]] = {}
    for scene, folders in roots.items():
        for folder in folders:
            if not folder.exists():
                sys.exit(f"scene_cuts: {folder} is missing (the shared data folder beside the project)")
            for src in discover(folder):
                frames = []
                for image in read_frames(src):
                    frames.append(to_model_frame(image, size, channels))
                    if limit and len(frames) >= limit:
                        break
                scenes.setdefault(scene, {})[f"{folder.name}/{src.name}"] = frames
                print(f"  {scene} {folder.name}/{src.name}: {len(frames)} frames", file=sys.stderr)
    return scenes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default=str(SHIPPED_DIR), help="the served model (its resolution and channels)")
    p.add_argument("--quick", action="store_true", help="the first 40 frames of each video")
    p.add_argument("--json")
    args = p.parse_args()
    bundle = load_bundle(args.model)
    threshold = MAX_CHANGE  # the server's scene_cut_change and `aedmae score`'s default
    scenes = load_videos(Path(args.data), bundle.image_size, bundle.channels, 40 if args.quick else 0)
    rows: dict[str, dict[str, Any]] = {}
    for step in (1, 5, 25):
        values = [picture_change(f[i], f[i + step]) for videos in scenes.values() for f in videos.values()
                  for i in range(0, len(f) - step, step)]
        if values:
            rows[f"one video, every {step} frame(s)"] = summary(values, threshold)
    per_video_ms: dict[str, list[float]] = {"one": [], "batch8": []}  # the check's cost, a frame
    for videos in scenes.values():
        for frames in videos.values():
            detector = CutDetector()
            t0 = time.perf_counter()
            for f in frames:  # one at a time, as a camera feeds it
                detector.check(f)
            per_video_ms["one"].append(1000 * (time.perf_counter() - t0) / max(len(frames), 1))
            stacked, detector = np.stack(frames), CutDetector()
            t0 = time.perf_counter()
            for k in range(0, len(stacked), 8):  # eight at a time, as a POST of 8 frames does
                detector.check_many(stacked[k : k + 8])
            per_video_ms["batch8"].append(1000 * (time.perf_counter() - t0) / max(len(frames), 1))
    picks = {scene: [f[k] for f in videos.values() for k in (0, len(f) // 2, -1)] for scene, videos in scenes.items()}
    for scene, frames in picks.items():  # first, middle and last frames of different videos of one scene
        n = len(frames)
        rows[f"{scene} with {scene}, other videos"] = summary(
            [picture_change(frames[i], frames[j]) for i in range(n) for j in range(n) if i // 3 != j // 3], threshold)
    rows["ped2 with avenue (a cut)"] = summary(
        [picture_change(a, b) for a in picks["ped2"] for b in picks["avenue"]]
        + [picture_change(b, a) for a in picks["ped2"] for b in picks["avenue"]], threshold)
    h, w = bundle.image_size
    print(f"\nscene-cut check: a cut above a picture change of {threshold} (model {h}x{w}, "
          f"{bundle.channels} channel(s))")
    print(f"| {'pairs of frames':<34} | pairs | min | median | 99.9% | max | called a cut |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name:<34} | {r['pairs']} | {r['min']:.3f} | {r['median']:.3f} | {r['q999']:.3f} | {r['max']:.3f} "
              f"| {100 * r['cut_share']:.1f}% |")
    ms, ms8 = (float(np.median(per_video_ms[k])) for k in ("one", "batch8"))
    print(f"cost: {ms:.3f} ms a frame one at a time, {ms8:.3f} eight at a time (medians over "
          f"{len(per_video_ms['one'])} videos)")
    if args.json:
        result = {"date": time.strftime("%Y-%m-%d"), "threshold": threshold, "model": str(args.model),
                  "quick": args.quick, "rows": rows, "ms_per_frame": round(ms, 4),
                  "ms_per_frame_batch8": round(ms8, 4)}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
