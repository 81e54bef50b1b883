"""Model-level speed: frames/s (median of repeated runs) per runtime, batch size and resolution, and
each row's achieved FLOP/s as a fraction of this machine's fp32 matmul rate measured in the same run
(the faster of torch and ONNX Runtime on a 1024^3 GEMM): once at the start of the run ("% of matmul")
and, since a shared machine's rate drifts over a run's minutes, again between each row's own timed
calls ("% of its own rounds'", JSON ``fraction_of_matmul_same_rounds``: after each call, 0.1 s for the
row's thread pool to stop spinning, one product to bring its operands back into the caches, one timed).

    python benchmarks/bench_model.py [--quick] [--json FILE] [--batches 1 8 32] [--no-compile]
        [--reference-only | --shipped-only]

Rows: PyTorch eager, PyTorch compiled, ONNX Runtime fp32 and int8 (what `aedmae export onnx
--precision int8` writes: static int8 of the weight products, its ranges here taken from the timed
frames, which changes nothing of its speed; until session 43 these rows were dynamic int8), on CPUs
with native bf16 (AVX512-BF16, AMX) also PyTorch eager and compiled under bf16 autocast, each for
the reference's work (one 50% mask: "one-pass") and for the deployed graph (two complementary masks,
every token scored, on the model's scoring grids: "deployed"; a model scored on several grids also
gets "deployed, 1 grid"); on a CUDA machine also torch CUDA fp16/bf16 with CUDA graphs (timed with
CUDA events).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.onnx_export import DeployedGraph, export_graph  # noqa: E402
from export.ort_fusion import ort_session  # noqa: E402
from export.quantize import quantize_int8  # noqa: E402
from model import checkpoint  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.cpu import native_cpu_bf16, reuse_freed_memory  # noqa: E402
from model.info import inference_passes, pass_macs  # noqa: E402
from model.network import AEDMAE  # noqa: E402
from model.scoring import Scorer  # noqa: E402


def median_rate(fn: Any, flops: float, seconds: float) -> float:
    """Median GFLOP/s of ``fn`` (``flops`` a call) over at least 5 calls and ``seconds``, after 3 warm-ups."""
    for _ in range(3):
        fn()
    rates = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(rates) < 5:
        t0 = time.perf_counter()
        fn()
        rates.append(flops / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def torch_product(dtype: torch.dtype, n: int = 1024) -> Callable[[], torch.Tensor]:
    """One n^3 matrix product in torch at ``dtype`` (2 n^3 flops a call), its operands made once."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return lambda: a @ b


def torch_matmul_gflops(dtype: torch.dtype, seconds: float, n: int = 1024) -> float:
    """Median GFLOP/s of an n^3 product in torch at ``dtype``."""
    return median_rate(torch_product(dtype, n), 2 * n**3, seconds)


class FP32Gemm:
    """This machine's fp32 GEMM (n^3) in torch and in ONNX Runtime (same threads). The higher rate is
    the ceiling the model rows compare to (ONNX Runtime's MLAS is the faster one on some CPUs);
    :meth:`rates` measures it once for the run, :meth:`sample` times one product of each between a
    row's timed calls, so that each row also gets a ceiling from its own minutes (a shared machine's
    rate drifts between rows)."""

    def __init__(self, n: int = 1024) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        self.flops = 2 * n**3
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
        w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul", [x], [y], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"x": np.random.default_rng(1).standard_normal((n, n), np.float32)}
        self.calls = {"torch": torch_product(torch.float32, n), "onnxruntime": lambda: sess.run(None, feed)}
        self.samples: dict[str, list[float]] = {name: [] for name in self.calls}

    def rates(self, seconds: float) -> dict[str, float]:
        rates = {name: median_rate(call, self.flops, seconds) for name, call in self.calls.items()}
        return rates | {"ceiling": max(rates.values())}

    def sample(self, settle_s: float = 0.1) -> None:
        time.sleep(settle_s)  # the timed graph's thread pool spins a while after its call and would slow these
        for name, call in self.calls.items():
            call()  # untimed: the row's call has evicted the product's operands from the caches
            t0 = time.perf_counter()
            call()
            self.samples[name].append(self.flops / (time.perf_counter() - t0) / 1e9)

    def take_ceiling(self) -> float:
        """The ceiling over the samples since the last call (the higher runtime's median); resets them."""
        ceiling = max(statistics.median(v) for v in self.samples.values())
        self.samples = {name: [] for name in self.calls}
        return ceiling


def time_fps(fn: Any, batch: int, repeats: int, min_seconds: float, between: Callable[[], None] | None = None) -> float:
    """Median frames/s of ``fn`` (``batch`` frames a call) over ``repeats`` calls and ``min_seconds``
    (at most 4 x ``repeats`` calls), after two warm-ups; ``between`` runs untimed after each call."""
    fn()  # warm-up
    fn()
    samples = []
    end = time.perf_counter() + min_seconds
    while len(samples) < repeats or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        samples.append(batch / (time.perf_counter() - t0))
        if between is not None:
            between()
        if len(samples) >= 4 * repeats:
            break
    return statistics.median(samples)


def autocast_cpu(model: Any, x: torch.Tensor, dtype: Any) -> Any:
    """model(x) as a timed call, under CPU autocast to ``dtype`` (None: plain float32); outputs come
    back as float32, as the service returns them."""
    def call() -> Any:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            return [t.float() for t in model(x)]
    return call


def graphs_for(name: str, model_dir: Path | None, cfg: ModelConfig) -> dict[str, DeployedGraph]:
    """The one-pass (one fixed mask, one view) and deployed graphs of a model (shipped weights, or
    seeded random weights); a model scored on several views (grids, time directions) also gets
    "deployed, 1 grid"."""
    variants = [("one-pass", "fixed", False), ("deployed", "complementary", True)]
    if cfg.scoring.views > 1:
        variants.insert(1, ("deployed, 1 grid", "complementary", False))
    out = {}
    for variant, masking, all_views in variants:
        if model_dir is not None:
            from model.evaluation import scorer_from_meta

            net, meta = checkpoint.load(model_dir)
            full = scorer_from_meta(net, meta)
            scoring = net.cfg.scoring if all_views else net.cfg.scoring.one_view()
            one = scoring != net.cfg.scoring  # the first view's statistics, uncalibrated
            net.cfg = dataclasses.replace(net.cfg, inference_masking=masking, scoring=scoring)
            scorer = Scorer(net.cfg.grid, scoring, None, *(m[:1] for m in full.token_means())) if one else full
        else:
            torch.manual_seed(0)
            net = AEDMAE(dataclasses.replace(cfg, inference_masking=masking)).eval()
            scorer = Scorer(net.cfg.grid)
        out[variant] = DeployedGraph(net, scorer).eval()
    return out


def onnx_session(graph: DeployedGraph, frames: np.ndarray, tmp: Path, int8: bool) -> Any:
    path = tmp / f"{id(graph)}.onnx"
    if not path.exists():
        export_graph(graph, frames, path)
    if int8:
        q = path.with_suffix(".int8.onnx")
        path = q if q.exists() else quantize_int8(path, q, "static", calibration=frames[:8])
    return ort_session(path, torch.get_num_threads())


def cuda_seconds(fn: Any, iters: int) -> float:
    """Seconds for ``iters`` calls of ``fn`` on the current CUDA stream, by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000


def cuda_matmul_tflops() -> dict[str, float]:
    """This GPU's 8192^3 matmul rate per precision (fp32 without TF32): the rows' ceilings."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are IEEE fp32
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(8192, 8192, device="cuda", dtype=dtype) for _ in range(2))
        cuda_seconds(lambda a=a, b=b: a @ b, 3)
        rates[name] = 2 * 8192**3 * 10 / cuda_seconds(lambda a=a, b=b: a @ b, 10) / 1e12
    return rates


def cuda_fps(model: Any, x: torch.Tensor, dtype: Any, repeats: int) -> float:
    """Frames/s of ``model`` on ``x`` under autocast ``dtype`` (None: fp32), replayed as one CUDA graph
    and timed with CUDA events (median of ``repeats`` runs of about 0.3 s)."""
    def step() -> Any:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None, cache_enabled=False):
            return model(x)

    stream = torch.cuda.Stream()
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.synchronize()
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(cuda_graph, stream=stream):
        step()
    iters = max(1, min(50, round(0.3 / cuda_seconds(cuda_graph.replay, 1))))
    return statistics.median(len(x) * iters / cuda_seconds(cuda_graph.replay, iters) for _ in range(repeats))


def cuda_rows(graph: DeployedGraph, batches: list[int], flops_per_frame: float, label: str, variant: str,
              repeats: int, ceilings: dict[str, float], compile_batches: list[int],
              compile_mode: str = "default") -> list[dict[str, Any]]:
    """torch CUDA fp32/fp16/bf16 with CUDA graphs at each batch; bf16 through torch.compile (Inductor's
    fused kernels, then the same CUDA graph) at ``compile_batches``."""
    rows = []
    dev = torch.device("cuda")
    g = graph.to(dev)
    h, w = g.net.cfg.image_size
    dtypes = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    runs = [(name, batch, "") for name in dtypes for batch in batches]
    compiled_tag = " compiled" if compile_mode == "default" else f" compiled ({compile_mode})"
    runs += [("bf16", batch, compiled_tag) for batch in compile_batches]
    compiled = None
    for dtype_name, batch, tag in runs:
        x = torch.randint(0, 256, (batch, 3, h, w, g.net.cfg.channels), dtype=torch.uint8, device=dev)
        t0 = time.perf_counter()
        if tag and compiled is None:
            compiled = torch.compile(g, dynamic=False, mode=compile_mode)
        try:
            fps = cuda_fps(compiled if tag else g, x, dtypes[dtype_name], repeats)
        except Exception as exc:  # Inductor needs Triton and a compiler: a row that cannot run says why
            if not tag:
                raise
            print(f"{label:18s} {variant:9s} cuda {dtype_name}{tag} b={batch}: failed: {exc!r:.300}", flush=True)
            rows.append({"model": label, "graph": variant, "runtime": f"torch cuda {dtype_name}{tag} + CUDA graphs",
                         "batch": batch, "error": repr(exc)[:1000]})
            continue
        fraction = fps * flops_per_frame / 1e12 / ceilings[dtype_name]
        rows.append({"model": label, "graph": variant, "runtime": f"torch cuda {dtype_name}{tag} + CUDA graphs",
                     "batch": batch, "frames_per_s": round(fps, 1), "seconds_to_first_result": round(
                         time.perf_counter() - t0, 1), "gflops_per_frame": round(flops_per_frame / 1e9, 3),
                     "fraction_of_matmul": round(fraction, 3), "matmul_tflops": round(ceilings[dtype_name], 1),
                     "device": torch.cuda.get_device_name()})
        print(f"{label:18s} {variant:9s} cuda {dtype_name}{tag} graphs b={batch:<4d} {fps:10.1f} frames/s "
              f"{fraction:6.1%} of {dtype_name} matmul", flush=True)
    graph.to("cpu")
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    reuse_freed_memory()  # as the aedmae command does: torch rows without page faults (model/cpu.py)
    from model.shipped import SHIPPED_DIR

    models: list[tuple[str, Path | None, ModelConfig]] = [] if args.shipped_only else [
        ("reference 320x640", None, ModelConfig())]
    if (SHIPPED_DIR / "model.json").exists() and not args.reference_only:
        shipped_cfg = checkpoint.load(SHIPPED_DIR)[0].cfg
        h, w = shipped_cfg.image_size
        models.append((f"shipped {h}x{w}", SHIPPED_DIR, shipped_cfg))
    cuda_ceilings: dict[str, float] = {}
    if args.cuda:
        cuda_ceilings = cuda_matmul_tflops()
        gemm = {f"cuda {k}": v * 1000 for k, v in cuda_ceilings.items()} | {"ceiling": cuda_ceilings["fp32"] * 1000}
        print("CUDA matmul rate: " + ", ".join(f"{k} {v:.1f}" for k, v in cuda_ceilings.items()) + " TFLOP/s")
    else:
        fp32_gemm = FP32Gemm()
        gemm = fp32_gemm.rates(1.0 if args.quick else 3.0)
        print(f"fp32 matmul rate ({torch.get_num_threads()} threads): "
              + ", ".join(f"{k} {v:.1f}" for k, v in gemm.items()) + " GFLOP/s", flush=True)
    ceiling = gemm["ceiling"]
    bf16 = not args.cuda and native_cpu_bf16()
    if bf16:  # beside the fp32 ceiling, not in it: the "% of matmul" is an fp32 figure
        gemm["torch bf16"] = torch_matmul_gflops(torch.bfloat16, 1.0 if args.quick else 3.0)
        print(f"bf16 matmul rate: {gemm['torch bf16']:.1f} GFLOP/s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for label, model_dir, cfg in models:
            graphs = graphs_for(label, model_dir, cfg)
            for variant, graph in graphs.items():
                gcfg = graph.net.cfg
                flops_per_frame = 2 * sum(pass_macs(gcfg).values()) * inference_passes(gcfg)
                h, w = gcfg.image_size
                if args.cuda:
                    rows += cuda_rows(graph, args.cuda_batches, flops_per_frame, label, variant, args.repeats,
                                      cuda_ceilings, args.cuda_compile_batches if variant == "deployed" else [],
                                      args.cuda_compile_mode)
                    continue
                for batch in args.batches:
                    frames = np.random.default_rng(0).integers(0, 256, (batch, 3, h, w, gcfg.channels), np.uint8)
                    x = torch.from_numpy(frames)
                    runtimes: dict[str, Any] = {}
                    for dtype in (None, torch.bfloat16) if bf16 else (None,):
                        suffix = " bf16" if dtype else ""
                        runtimes["torch eager" + suffix] = autocast_cpu(graph, x, dtype)
                        if not args.no_compile and batch == 8:  # compiling takes minutes on 2 cores: batch 8 only
                            torch._dynamo.reset()  # each precision its own compiled graph, not a recompile
                            compiled = torch.compile(graph, dynamic=False)
                            runtimes["torch compiled" + suffix] = autocast_cpu(compiled, x, dtype)
                    for name, int8 in (("onnxruntime fp32", False), ("onnxruntime int8", True)):
                        sess = onnx_session(graph, frames, tmp, int8)
                        runtimes[name] = lambda s=sess, f=frames: s.run(None, {"frames": f})
                    for name, fn in runtimes.items():
                        with torch.inference_mode():
                            fps = time_fps(fn, batch, args.repeats, args.min_seconds, between=fp32_gemm.sample)
                        own = fp32_gemm.take_ceiling()
                        row = {"model": label, "graph": variant, "runtime": name, "batch": batch,
                               "frames_per_s": round(fps, 1), "gflops_per_frame": round(flops_per_frame / 1e9, 3),
                               "fraction_of_matmul": round(fps * flops_per_frame / 1e9 / ceiling, 3),
                               "matmul_gflops_same_rounds": round(own, 1),
                               "fraction_of_matmul_same_rounds": round(fps * flops_per_frame / 1e9 / own, 3)}
                        if name.endswith("bf16"):
                            row["fraction_of_bf16_matmul"] = round(fps * flops_per_frame / 1e9 / gemm["torch bf16"], 3)
                        rows.append(row)
                        print(f"{label:18s} {variant:9s} {name:17s} b={batch:<3d} {fps:8.1f} frames/s "
                              f"{row['fraction_of_matmul']:6.1%} of matmul "
                              f"({row['fraction_of_matmul_same_rounds']:.1%} of its own rounds' {own:.0f})", flush=True)
    return {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
            "date": time.strftime("%Y-%m-%d"), "matmul_gflops": round(ceiling, 1),
            "matmul_gflops_by_runtime": {k: round(v, 1) for k, v in gemm.items()}, "rows": rows,
            "settings": vars(args)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI-sized: batch 8 only, reference model, no compile")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--reference-only", action="store_true")
    p.add_argument("--shipped-only", action="store_true")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--cuda", action="store_true", help="GPU rows only: torch CUDA fp32/fp16/bf16 + CUDA graphs")
    p.add_argument("--cuda-batches", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--cuda-compile-batches", type=int, nargs="*", default=[],
                   help="deployed graphs also in bf16 through torch.compile at these batches (a minute or more each)")
    p.add_argument("--cuda-compile-mode", default="default",
                   help="torch.compile mode of those rows, e.g. max-autotune-no-cudagraphs (the rows capture their "
                        "own CUDA graph; autotuning the matrix products takes minutes)")
    args = p.parse_args()
    if args.quick:
        args.batches, args.repeats, args.min_seconds, args.no_compile = [8], 2, 0.0, True
        args.reference_only = True
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
