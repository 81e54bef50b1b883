"""Test-set AUC through ONNX Runtime: the exported fp32 graph and its int8 (dynamic quantisation of
MatMul/Gemm weights) version, so the int8 speed-up of bench_model.py comes with its accuracy cost.

    python benchmarks/onnx_auc.py [--model model/weights/ped2] --data ../shared/data/ped2 [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.bundle import load_bundle
from export.onnx_export import run_onnxruntime
from export.quantize import quantize_int8
from model.datasets import read_test_set
from model.frames import FrameCache, default_cache_dir
from model.metrics import gaussian_smooth, summarize
from model.shipped import SHIPPED_DIR
from model.window import clip_windows


def test_set_auc(graph: Path, data: str, size: tuple[int, int], channels: int, sigma: float) -> dict[str, float]:
    _, videos = read_test_set(data)
    cache = FrameCache(default_cache_dir())
    per_video = {}
    t0 = time.perf_counter()
    frames_total = 0
    for v in videos:
        frames = cache.load(v.source, size, channels)
        out = run_onnxruntime(graph, clip_windows(frames, np.arange(len(frames))), batch=16)
        per_video[v.name] = (v.labels, out["score"])
        frames_total += len(frames)
    seconds = time.perf_counter() - t0
    raw = summarize(per_video)
    smoothed = summarize({k: (y, gaussian_smooth(s, sigma)) for k, (y, s) in per_video.items()})
    return {"micro_auc": raw["micro_auc"], "micro_auc_smoothed": smoothed["micro_auc"],
            "frames_per_s": frames_total / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(SHIPPED_DIR), help="model folder with model.onnx")
    p.add_argument("--data", required=True)
    p.add_argument("--sigma", type=float, default=3.0)
    p.add_argument("--json")
    args = p.parse_args()
    bundle = load_bundle(args.model)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        int8 = Path(tmp) / "int8.onnx"
        quantize_int8(bundle.graph, int8, "dynamic")
        for name, graph in (("fp32", bundle.graph), ("int8", int8)):
            result[name] = test_set_auc(graph, args.data, bundle.image_size, bundle.channels, args.sigma)
            print(f"{name}: micro AUC {100 * result[name]['micro_auc']:.2f} (smoothed "
                  f"{100 * result[name]['micro_auc_smoothed']:.2f}), {result[name]['frames_per_s']:.1f} frames/s")
    result["int8_minus_fp32_points"] = 100 * (result["int8"]["micro_auc"] - result["fp32"]["micro_auc"])
    print(f"int8 - fp32: {result['int8_minus_fp32_points']:+.2f} AUC points")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
