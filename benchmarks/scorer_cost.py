"""What a scoring setting costs at inference: the deployed ONNX graph of a model with its own scorer
against the same weights and token statistics with `model.scoring` overrides, timed in turns in one
run (ONNX Runtime fp32, this machine's threads; medians), so machine noise hits both alike.

    python benchmarks/scorer_cost.py [--model CKPT] --set topk_fraction=0.05 discrepancy_weight=1 contrast=none \
        [--batches 1 8] [--rounds 5] [--json FILE]

Only settings that keep the token statistics valid can be compared (not grid_shifts: each grid
has its own statistics; bench_model.py measures grids).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_model import onnx_session, time_fps

from export.onnx_export import DeployedGraph
from model import checkpoint
from model.config import with_scoring
from model.errors import ConfigError
from model.evaluation import scorer_from_meta
from model.scoring import Scorer
from model.shipped import SHIPPED_DIR


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(SHIPPED_DIR))
    p.add_argument("--set", nargs="+", required=True, metavar="KEY=VALUE", help="model.scoring overrides")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=5, help="turns of each graph per batch size")
    p.add_argument("--json")
    args = p.parse_args()
    net, meta = checkpoint.load(args.model)
    net.eval()
    mine = scorer_from_meta(net, meta)
    try:
        cfg = with_scoring(net.cfg, args.set)
    except ConfigError as e:
        p.error(str(e))
    if cfg.scoring.views != net.cfg.scoring.views:
        p.error("grid_shifts / time_reversal change the token statistics; compare views with bench_model.py")
    other = Scorer(net.cfg.grid, cfg.scoring, None, *mine.token_means())
    h, w = net.cfg.image_size
    frames = np.random.default_rng(0).integers(0, 256, (8, 3, h, w, net.cfg.channels), dtype=np.uint8)
    tmp = Path(tempfile.mkdtemp())
    sessions = {}
    for name, scorer in (("model's scorer", mine), ("with --set", other)):
        (tmp / str(len(sessions))).mkdir()
        sessions[name] = onnx_session(DeployedGraph(net, scorer).eval(), frames, tmp / str(len(sessions)), False)
    rows = []
    for batch in args.batches:
        x = np.resize(frames, (batch, *frames.shape[1:]))
        samples: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(args.rounds):
            for name, s in sessions.items():
                feed = {s.get_inputs()[0].name: x}
                samples[name].append(time_fps(lambda s=s, feed=feed: s.run(None, feed), batch, 3, 0.0))
        row = {"batch": batch} | {k: float(np.median(v)) for k, v in samples.items()}
        rows.append(row)
        print(f"batch {batch}: " + ", ".join(f"{k} {row[k]:.2f} frames/s" for k in sessions), flush=True)
    print(f"threads {torch.get_num_threads()}; --set {' '.join(args.set)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "set": args.set, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
