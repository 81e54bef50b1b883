"""What glibc's handling of large blocks costs PyTorch on the CPU: the shipped model's deployed graph
in torch (what the torch backend runs) timed at each batch size with malloc as it comes and with
``model.cpu.reuse_freed_memory`` (what the ``aedmae`` command and the torch backend set), each in
its own process (the setting cannot be taken back), with the minor page faults of a call beside the
frames/s.

    python benchmarks/page_faults.py [--model model/weights/ped2] [--batches 8 16] [--repeats 4]
        [--precision fp32] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.shipped import SHIPPED_DIR


def measure(model: str, batches: list[int], repeats: int, precision: str, reuse: bool) -> list[dict]:
    """Frames/s and page faults of the checkpoint's deployed graph in torch, as the torch backend runs it
    (built here rather than through the backend, which sets the allocator itself on the CPU)."""
    import torch
    from bench_model import autocast_cpu

    from export.onnx_export import DeployedGraph
    from model import checkpoint
    from model.cpu import reuse_freed_memory
    from model.evaluation import scorer_from_meta

    if reuse:
        reuse_freed_memory()
    net, meta = checkpoint.load(model)
    graph = DeployedGraph(net, scorer_from_meta(net, meta)).eval()
    h, w = net.cfg.image_size

    rows = []
    for batch in batches:
        x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, 3, h, w, net.cfg.channels), np.uint8))
        infer = autocast_cpu(graph, x, torch.bfloat16 if precision == "bf16" else None)
        with torch.inference_mode():
            infer()  # warm-up
        rates, faults = [], []
        for _ in range(repeats):
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            with torch.inference_mode():
                infer()
            rates.append(batch / (time.perf_counter() - t0))
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        rows.append({"reuse_freed_memory": reuse, "batch": batch, "frames_per_s": round(statistics.median(rates), 2),
                     "page_faults_per_call": int(statistics.median(faults))})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(SHIPPED_DIR))
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--json")
    p.add_argument("--child", choices=["as-is", "reuse"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        rows = measure(args.model, args.batches, args.repeats, args.precision, args.child == "reuse")
        print(json.dumps(rows))
        return
    rows = []
    for mode in ("as-is", "reuse", "as-is", "reuse"):  # in turns, twice: this machine drifts
        cmd = [sys.executable, __file__, "--child", mode, "--model", args.model, "--repeats", str(args.repeats),
               "--precision", args.precision, "--batches", *map(str, args.batches)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    print(f"deployed graph in torch, {args.precision}, {args.model}")
    print(f"{'malloc':8s} {'batch':>5s} {'frames/s':>9s} {'page faults a call':>19s}")
    for r in rows:
        print(f"{'reuse' if r['reuse_freed_memory'] else 'as-is':8s} {r['batch']:5d} {r['frames_per_s']:9.2f} "
              f"{r['page_faults_per_call']:19,d}")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "precision": args.precision,
                                               "model": args.model, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
