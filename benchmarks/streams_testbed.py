"""A camera-overload testbed that needs no GPU: a tiny model and a small clip, so that on a 2-core
CPU the camera threads' Python work, not inference, is what many cameras exhaust (as on the H200).

    python benchmarks/streams_testbed.py --out runs/testbed     # writes the model and clip, ~30 s
    python benchmarks/bench_streams.py --source file --fps 25 --start 32 --max-cameras 64 \\
        --seconds 6 --warmup 3 --clip runs/testbed/clip.mp4 \\
        --serve-args "--model runs/testbed/model/model.onnx --max-batch-size 64"

The model is the ``tiny`` preset (32x48) with seeded random weights, its scorer fitted on the first
frames of the Avenue footage; the clip is that footage at 96x64, 25 fps. Scores mean nothing here:
the testbed measures how the server behaves, not what it finds (benchmarks/RESULTS.md, session 24).
"""

from __future__ import annotations

import argparse
import sys
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.onnx_export import export_onnx  # noqa: E402
from model import checkpoint  # noqa: E402
from model.config import preset  # noqa: E402
from model.errors import DataError  # noqa: E402
from model.evaluation import fit_scorer  # noqa: E402
from model.frames import VideoSource, read_frames, to_model_frame  # noqa: E402
from model.network import AEDMAE  # noqa: E402

FOOTAGE = ROOT.parent / "shared" / "data" / "footage" / "avenue_train_10.mp4"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for model/ and clip.mp4")
    p.add_argument("--footage", default=str(FOOTAGE))
    p.add_argument("--frames", type=int, default=750, help="clip length (30 s at 25 fps)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        raw = list(islice(read_frames(VideoSource(Path(args.footage).stem, Path(args.footage))), args.frames))
    except DataError as e:
        sys.exit(str(e))
    if not raw:
        sys.exit(f"no frames in {args.footage}")
    writer = cv2.VideoWriter(str(out / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (96, 64))
    for frame in raw:
        writer.write(cv2.resize(frame, (96, 64), interpolation=cv2.INTER_AREA))
    writer.release()
    torch.manual_seed(0)
    cfg = preset("tiny")[0]
    frames = np.stack([to_model_frame(f, cfg.image_size, cfg.channels) for f in raw[:80]])
    net = AEDMAE(cfg).eval()
    _, meta = fit_scorer(net, [("avenue_a", frames[:40]), ("avenue_b", frames[40:])])
    folder = checkpoint.save(net, out / "model", **meta)
    export_onnx(folder, folder / "model.onnx", max_batch=64)
    print(f"written {out / 'clip.mp4'} ({len(raw)} frames, 96x64) and {folder / 'model.onnx'} "
          f"({cfg.image_size[0]}x{cfg.image_size[1]})")


if __name__ == "__main__":
    main()
