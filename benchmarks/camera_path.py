"""What a camera thread spends on each frame in Python before the frame is queued (one thread, no
server): decoding, resizing to the model, the scene-cut check, the validity check and the window. The
numpy steps hold the GIL; OpenCV's release it. With dozens of cameras the GIL-holding steps are what
starves the inference workers (benchmarks/RESULTS.md, session 24), so this is the number to cut.

    python benchmarks/camera_path.py [--clip ../shared/data/footage/avenue_train_10.mp4] [--json FILE]

Microseconds a frame, median of 5 passes over the clip's first 300 frames at the shipped model's size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import checkpoint  # noqa: E402
from model.cuts import CutDetector  # noqa: E402
from model.errors import DataError  # noqa: E402
from model.frames import VideoSource, read_frames, to_model_frame  # noqa: E402
from model.shipped import SHIPPED_DIR  # noqa: E402
from model.window import FrameWindow  # noqa: E402
from service.stream_parts import Validity  # noqa: E402

FOOTAGE = ROOT.parent / "shared" / "data" / "footage" / "avenue_train_10.mp4"


def per_frame_us(fn: Any, items: list[Any], passes: int = 5) -> float:
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for i, item in enumerate(items):
            fn(i, item)
        times.append((time.perf_counter() - t0) / len(items) * 1e6)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default=str(FOOTAGE))
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--json")
    args = p.parse_args()
    cfg = checkpoint.load(SHIPPED_DIR)[0].cfg
    source = VideoSource(Path(args.clip).stem, Path(args.clip))
    try:
        raw = list(islice(read_frames(source), args.frames))
    except DataError as e:
        sys.exit(str(e))
    if not raw:
        sys.exit(f"no frames in {args.clip}")
    frames = [to_model_frame(f, cfg.image_size, cfg.channels) for f in raw]
    cut, validity, window = CutDetector(), Validity(), FrameWindow()

    def decode_us() -> float:  # one pass over the same frames, as a camera reads them
        t0 = time.perf_counter()
        count = sum(1 for _ in islice(read_frames(source), len(raw)))
        return (time.perf_counter() - t0) / count * 1e6

    rows = {
        "decode (OpenCV, GIL released)": statistics.median(decode_us() for _ in range(3)),
        "to_model_frame (OpenCV, GIL released)": per_frame_us(
            lambda i, f: to_model_frame(f, cfg.image_size, cfg.channels), raw),
        "scene-cut check": per_frame_us(lambda i, f: cut.check(f), frames),
        "validity check": per_frame_us(lambda i, f: validity.check(f, i / 25), frames),
        "window push": per_frame_us(lambda i, f: window.push(f), frames),
    }
    print(f"{len(raw)} frames of {Path(args.clip).name} at {cfg.image_size[0]}x{cfg.image_size[1]}x{cfg.channels}")
    for name, us in rows.items():
        print(f"  {name:40s} {us:8.1f} us a frame")
    if args.json:
        Path(args.json).write_text(json.dumps({"clip": args.clip, "us_per_frame": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
