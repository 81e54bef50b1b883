"""Test-set AUC through the serving backends: ONNX Runtime on the exported fp32 graph and on its int8
(dynamic quantisation of MatMul/Gemm weights) version, with ``--calibration`` also on its static int8
version (weight products, activation ranges from that training footage; export/quantize.py), and on
CPUs with native bf16 the torch backend in bf16, so each speed-up of bench_model.py and
int8_study.py comes with its accuracy cost.

    python benchmarks/onnx_auc.py [--model model/weights/ped2] --data ../shared/data/ped2 \
        [--calibration ../shared/data/ped2/train] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.bundle import infer_in_batches, load_bundle
from export.onnx_export import run_onnxruntime
from export.quantize import calibration_windows, quantize_int8
from model.cpu import native_cpu_bf16, reuse_freed_memory
from model.datasets import read_test_set
from model.frames import FrameCache, default_cache_dir
from model.metrics import gaussian_smooth, summarize
from model.shipped import SHIPPED_DIR
from model.window import clip_windows
from service.backends import create_backend
from service.settings import Settings


def test_set_auc(infer: Callable[[np.ndarray], dict[str, np.ndarray]], data: str, size: tuple[int, int],
                 channels: int, sigma: float) -> dict[str, Any]:
    _, videos = read_test_set(data)
    cache = FrameCache(default_cache_dir())
    per_video = {}
    t0 = time.perf_counter()
    frames_total = 0
    for v in videos:
        frames = cache.load(v.source, size, channels)
        out = infer(clip_windows(frames, np.arange(len(frames))))
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
    p.add_argument("--calibration", help="training footage: adds static int8, its ranges taken from these frames")
    p.add_argument("--sigma", type=float, default=3.0)
    p.add_argument("--json")
    args = p.parse_args()
    reuse_freed_memory()  # as the aedmae command does (model/cpu.py)
    bundle = load_bundle(args.model)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        int8 = Path(tmp) / "int8.onnx"
        quantize_int8(bundle.graph, int8, "dynamic")
        variants: dict[str, Callable[[np.ndarray], dict[str, np.ndarray]]] = {
            "fp32": lambda w: run_onnxruntime(bundle.graph, w, batch=16),
            "int8": lambda w: run_onnxruntime(int8, w, batch=16)}
        if args.calibration:
            static = quantize_int8(bundle.graph, Path(tmp) / "static.onnx", "static",
                                   calibration_windows(args.calibration, bundle.image_size, bundle.channels))
            variants["int8 static"] = lambda w: run_onnxruntime(static, w, batch=16)
        if native_cpu_bf16():  # what `aedmae serve --backend torch --precision bf16` runs
            torch_bf16 = create_backend("torch", bundle, Settings(model=args.model, backend="torch", precision="bf16"))
            variants["torch bf16"] = partial(infer_in_batches, torch_bf16, batch=16)
        for name, infer in variants.items():
            result[name] = test_set_auc(infer, args.data, bundle.image_size, bundle.channels, args.sigma)
            print(f"{name}: micro AUC {100 * result[name]['micro_auc']:.2f} (smoothed "
                  f"{100 * result[name]['micro_auc_smoothed']:.2f}), {result[name]['frames_per_s']:.1f} frames/s")
    for name in [n for n in result if n != "fp32"]:
        result[f"{name}_minus_fp32_points"] = 100 * (result[name]["micro_auc"] - result["fp32"]["micro_auc"])
        print(f"{name} - fp32: {result[f'{name}_minus_fp32_points']:+.2f} AUC points")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
