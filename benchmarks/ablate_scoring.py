"""Scoring and masking ablations of one trained checkpoint, on the same network outputs.

    python benchmarks/ablate_scoring.py --model CKPT --train ../shared/data/ped2/train \
        [--test ../shared/data/ped2] [--random-runs 5] [--json FILE]

For each scoring variant (paper mean / top-k, raw / token-normalised; teacher error only,
discrepancy only, both) it reports the label-free synthetic validation AUC on the held-out tails of
the training videos (what choices are made on) and, with --test, the test micro AUC (reported only).
With --test it also compares the inference masking designs: complementary (ours), one fixed
checkerboard, and the reference's random masking (mean and spread over --random-runs runs), each
scored with the shipped token statistics and with statistics refit under its own masks, and the
latter also on the label-free synthetic validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import checkpoint
from model.config import TrainConfig
from model.cpu import reuse_freed_memory
from model.dataset import load_segments
from model.datasets import read_test_set
from model.evaluation import (
    ablation_scorers,
    apply_scorer,
    fit_scorer_on_segments,
    metrics_for,
    score_test_set,
    synthetic_validation,
)
from model.frames import FrameCache, default_cache_dir
from model.masking import inference_keep
from model.synthetic import AnomalySynthesizer

BASE = " base"  # the fitted scorer's key beside the ablation variants (a space: no variant is named so)


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options both scoring scripts take: the model, its training footage, a test set."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True, help="the training footage (its held-out tails are used)")
    p.add_argument("--test", help="a labelled test set (AUC is reported, never used to choose)")
    p.add_argument("--sigma", type=float, default=3.0, help="offline smoothing, frames")
    p.add_argument("--json")
    return p


def load(model: str, footage: str) -> tuple[Any, dict[str, Any], TrainConfig, FrameCache, list[Any], list[Any]]:
    """(network, checkpoint metadata, its training config, frame cache, training segments, held-out
    segments; the training segments themselves when nothing was held out)."""
    reuse_freed_memory()  # as the aedmae command does: no page faults on every forward pass (model/cpu.py)
    torch.manual_seed(0)
    net, meta = checkpoint.load(model)
    train_cfg = checkpoint.train_config(meta) or TrainConfig()
    cache = FrameCache(default_cache_dir())
    train, held, _ = load_segments([footage], net.cfg, train_cfg, cache)
    return net, meta, train_cfg, cache, train, held or train


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--random-runs", type=int, default=5)
    args = p.parse_args()
    net, _, train_cfg, cache, train, held = load(args.model, args.train)
    base, _ = fit_scorer_on_segments(net, held)
    variants = ablation_scorers(base)
    synth = AnomalySynthesizer([s.frames for s in train], train_cfg.synthetic)
    # the base scorer rides along (a scorer costs nothing once the pairs are scored): it is the configured
    # masking design's validation below, which would otherwise score the same pairs a second time
    validations = synthetic_validation(net, held, synth, variants | {BASE: base})
    base_validation = validations.pop(BASE)
    result: dict[str, object] = {"synthetic_validation_auc": validations}
    print("label-free synthetic validation AUC (held-out normal frames vs the same with pasted objects):")
    for k, v in result["synthetic_validation_auc"].items():  # type: ignore[attr-defined]
        print(f"  {k:42s} {100 * v:5.1f}")
    if args.test:
        _, videos = read_test_set(args.test)
        raw = score_test_set(net, videos, cache, progress=False)
        test = {}
        for name, scorer in variants.items():
            m = metrics_for({k: (y, apply_scorer(scorer, e)) for k, (y, e, _) in raw.items()}, args.sigma, None)
            test[name] = {"micro": m["raw"]["micro_auc"], "smoothed": m["smoothed"]["micro_auc"],
                          "teacher_only": m["teacher_error_only"], "discrepancy_only": m["discrepancy_only"]}
        result["test_micro_auc"] = test
        print("test micro AUC (reported only): raw / smoothed / teacher-only / discrepancy-only")
        for k, v in test.items():
            print(f"  {k:42s} {100 * v['micro']:5.1f} {100 * v['smoothed']:5.1f} "
                  f"{100 * v['teacher_only']:5.1f} {100 * v['discrepancy_only']:5.1f}")
        # each design scored with the configured design's token statistics (the shipped ones) and
        # with statistics refit on the held-out tails under its own masks, as deploying it would; the
        # configured design's passes are the ones already scored (unless random: each run draws anew)
        masking: dict[str, dict[str, Any]] = {}
        configured = net.cfg.inference_masking if net.cfg.inference_masking != "random" else None
        for mode in ("fixed", "random", "complementary"):
            shipped, refit, validation = [], [], []
            for r in range(args.random_runs if mode == "random" else 1):
                net.cfg = dataclasses.replace(net.cfg, inference_masking=mode)
                keep = inference_keep(net.cfg, torch.Generator().manual_seed(r))
                # own: the design's own statistics, and with them the label-free measure a choice of design
                # could be made on
                if mode == configured:
                    raw_m, own, own_validation = raw, base, base_validation
                else:
                    raw_m = score_test_set(net, videos, cache, progress=False, keep=keep)
                    own = fit_scorer_on_segments(net, held, keep=keep)[0]
                    own_validation = synthetic_validation(net, held, synth, {"own": own}, keep=keep)["own"]
                validation.append(own_validation)
                for scorer, runs in ((base, shipped), (own, refit)):
                    m = metrics_for({k: (y, apply_scorer(scorer, e)) for k, (y, e, _) in raw_m.items()}, args.sigma,
                                    None)
                    runs.append(m["raw"]["micro_auc"])
            masking[mode] = {"mean": float(np.mean(shipped)), "std": float(np.std(shipped)), "runs": shipped,
                             "refit": {"mean": float(np.mean(refit)), "std": float(np.std(refit)), "runs": refit},
                             "synthetic_validation_refit": validation}
        result["inference_masking_micro_auc"] = masking
        print("inference masking, test micro AUC: the shipped token statistics / refit under its own masks; "
              "synthetic validation, refit")
        for k, v in masking.items():
            print(f"  masking {k:14s} {100 * v['mean']:5.1f} ± {100 * v['std']:.1f}   "
                  f"{100 * v['refit']['mean']:5.1f} ± {100 * v['refit']['std']:.1f}   "
                  f"{100 * np.mean(v['synthetic_validation_refit']):5.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
