"""Where ONNX Runtime spends the deployed graph's time on this CPU: fp32 with and without attention fusion
(export/ort_fusion.py), dynamic int8 and static int8, each profiled per op, and the most weight-only
int8 could give (Amdahl): why int8 does not double fp32 here.

    python benchmarks/int8_study.py [--model model/weights/ped2] --calibration ../shared/data/ped2/train \
        [--batch 8] [--json FILE]

dynamic = int8 MatMul/Gemm weights, activations scaled per call; static = QDQ with activation
ranges calibrated on 64 real training frames, weight products only, attention left fp32 and fused
(export/quantize.py); the other static rows each make one choice the export does not: products
that requantise their outputs to int8, the convolutions in int8 too, the attention products too.
The profile splits MatMul time into weight GEMMs (one input is a constant) and attention products
(both inputs computed), from ONNX Runtime's per-node profile of its optimised graph. "batch dep." is how
much a frame's score moves between being scored in the batch and alone: why dynamic int8 is not a
serving precision (the dynamic batcher decides which frames share a call), where static int8 could be.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.bundle import INPUT_NAME, load_bundle
from export.ort_fusion import ort_session, session_options
from export.quantize import calibration_windows, quantize_int8
from model.shipped import SHIPPED_DIR

# matmul-like op types and the positions of their two operands
MATMULS = {"MatMul": (0, 1), "FusedMatMul": (0, 1), "Gemm": (0, 1), "DynamicQuantizeMatMul": (0, 1),
           "MatMulInteger": (0, 1), "MatMulIntegerToFloat": (0, 1), "QLinearMatMul": (0, 3)}


# static int8 as exported (the first) and the three choices export/quantize.py does not make
STATIC_VARIANTS: dict[str, dict[str, bool]] = {
    "int8 static": {},
    "int8 static, int8 outputs": {"int8_product_outputs": True},
    "int8 static, convs too": {"convolutions": True},
    "int8 static, attention too": {"attention_products": True},
}


def session(path: Path, threads: int, profile_dir: Path | None = None, fused: bool = True) -> Any:
    opts = session_options(threads)
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_dir / path.stem)
        opts.optimized_model_filepath = str(profile_dir / f"{path.stem}.optimised.onnx")
    return ort_session(path, fuse=fused, options=opts)


def profile(path: Path, frames: np.ndarray, threads: int, tmp: Path, fused: bool, runs: int = 5) -> dict[str, float]:
    """Share of kernel time per op type; matmuls split into weight GEMMs and attention products."""
    import onnx

    sess = session(path, threads, tmp, fused)
    for _ in range(runs):
        sess.run(None, {INPUT_NAME: frames})
    events = json.loads(Path(sess.end_profiling()).read_text())
    optimised = onnx.load(str(tmp / f"{path.stem}.optimised.onnx"))
    constants = {i.name for i in optimised.graph.initializer}
    constants |= {o for n in optimised.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants
                  for o in n.output}
    weighted = {n.name for n in optimised.graph.node
                if n.op_type in MATMULS and any(n.input[i] in constants for i in MATMULS[n.op_type])}
    spent: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op, node = e["args"]["op_name"], e["name"].removesuffix("_kernel_time")
        kind = ("weight GEMM" if node in weighted else "attention product") if op in MATMULS else \
            "attention (fused)" if op == "MultiHeadAttention" else op
        spent[kind] += e["dur"]
    total = sum(spent.values())
    return {k: v / total for k, v in spent.most_common()}


def interleaved_fps(sessions: dict[str, Any], frames: np.ndarray, rounds: int) -> dict[str, float]:
    """Median frames/s of each session, timed in turns (one call each per round), so that a shared
    machine's slow spells fall on every graph alike and the ratios stay comparable."""
    for sess in sessions.values():
        sess.run(None, {INPUT_NAME: frames})
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, {INPUT_NAME: frames})
            samples[name].append(len(frames) / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in samples.items()}


def batch_dependence(sess: Any, frames: np.ndarray) -> float:
    """Largest relative change of a frame's score between scoring it in the batch and alone: 0 up to
    rounding for fp32; dynamic int8 scales activations per call, so a frame's score then depends on the
    frames it was batched with (which the service's dynamic batcher chooses)."""
    together = sess.run(["score"], {INPUT_NAME: frames})[0]
    alone = np.concatenate([sess.run(["score"], {INPUT_NAME: frames[i : i + 1]})[0] for i in range(len(frames))])
    return float(np.max(np.abs(together - alone) / np.maximum(np.abs(alone), 1e-12)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(SHIPPED_DIR), help="model folder with model.onnx")
    p.add_argument("--calibration", required=True, help="training footage for the static ranges")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15, help="timing rounds (each graph once per round)")
    p.add_argument("--json")
    args = p.parse_args()
    bundle = load_bundle(args.model)
    calib = calibration_windows(args.calibration, bundle.image_size, bundle.channels)
    frames = calib[: args.batch]
    result: dict[str, Any] = {"model": str(bundle.graph), "batch": args.batch, "threads": args.threads, "rows": {}}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        graphs = {"fp32, attention not fused": (bundle.graph, False), "fp32": (bundle.graph, True),
                  "int8 dynamic": (quantize_int8(bundle.graph, tmp / "dynamic.onnx", "dynamic"), True)}
        for name, choice in STATIC_VARIANTS.items():
            path = quantize_int8(bundle.graph, tmp / f"static{len(graphs)}.onnx", "static", calib, **choice)
            graphs[name] = (path, True)
        sessions = {name: session(path, args.threads, fused=fused) for name, (path, fused) in graphs.items()}
        fps = interleaved_fps(sessions, frames, args.repeats)
        for name, (path, fused) in graphs.items():
            shares = profile(path, frames, args.threads, tmp, fused)
            result["rows"][name] = {"frames_per_s": round(fps[name], 2), "profile": shares,
                                    "batch_dependence": batch_dependence(sessions[name], frames)}
    rows = result["rows"]
    fp32 = rows["fp32"]
    weight_share = fp32["profile"].get("weight GEMM", 0.0)
    result["amdahl_bound_weight_int8"] = 1 / (1 - weight_share)
    print(f"{'graph':28s} {'frames/s':>9s} {'vs fp32':>8s} {'batch dep.':>10s}   time shares (top 5)")
    for name, row in rows.items():
        row["speedup"] = round(row["frames_per_s"] / fp32["frames_per_s"], 3)
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(row["profile"].items())[:5])
        dep = row["batch_dependence"]
        print(f"{name:28s} {row['frames_per_s']:9.1f} {row['speedup']:7.2f}x {dep:10.1e}   {shares}")
    print(f"weight GEMMs are {100 * weight_share:.0f}% of the fp32 time: int8 weights that cost nothing would give "
          f"at most {result['amdahl_bound_weight_int8']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
