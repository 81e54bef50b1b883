"""Training speed by precision: the real training steps of a preset, fp32 against bf16 autocast,
timed in turns in one run, beside this machine's matmul rate in each precision.

    python benchmarks/bench_training.py [--preset ped2] [--data ../shared/data/ped2/train]
        [--precisions fp32 bf16] [--steps 4] [--rounds 3] [--compile] [--profile] [--json FILE] [--quick]

Each stage's step is ``Trainer.train_step`` (forward, loss, backward, AdamW) on the stage's trainable
parameters (teacher: encoder + teacher decoder; student: the student decoder on the frozen backbone),
on batches drawn once from the preset's training samples (pasted anomalies, grid shifts and all), so
data loading is not timed. Frames/s per stage and precision are medians over ``--rounds``; the
precisions alternate within each round, so a neighbour slowing the machine slows both. The matmul
rows are a 1024^3 product in torch at each precision (bench_model's median rate). ``--profile`` adds
each precision's largest ops in teacher steps (torch.profiler). ``--compile`` times each precision
again with the network's forward compiled (``torch.compile``, Inductor), in the same rounds, and reports
what the compile took (the first compiled step, not timed in the rows). ``--quick``: the tiny preset,
two rounds of two steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_model import torch_matmul_gflops

from model.config import apply_overrides, preset
from model.network import AEDMAE
from model.training import Trainer, autocast_dtype

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def stage_setup(trainer: Trainer, teacher_stage: bool) -> tuple[AEDMAE, torch.optim.Optimizer, torch.Generator]:
    """A seeded network prepared for the stage, an optimiser over what the stage trains, a mask generator."""
    torch.manual_seed(0)
    net = AEDMAE(trainer.model_cfg).to(trainer.device)
    trainer.prepare_stage(net, teacher_stage)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)
    return net, opt, torch.Generator().manual_seed(0)


def stage_rates(trainer: Trainer, teacher_stage: bool, batches: list[dict[str, torch.Tensor]],
                precisions: list[str], rounds: int, compile_backend: str | None = None,
                ) -> tuple[dict[tuple[str, bool], list[float]], dict[str, float]]:
    """Frames/s of ``len(batches)`` steps per (precision, compiled) and round (one warm-up step before
    each), and the seconds each precision's first compiled step took (the compile). Compiled: the
    forward under ``torch.compile(backend=compile_backend)``, where one is given."""
    net, opt, gen = stage_setup(trainer, teacher_stage)
    frames = sum(b["frames"].shape[0] for b in batches)
    eager = net.forward
    compiled = compile_backend is not None
    forwards = {False: eager, True: torch.compile(eager, backend=compile_backend)} if compiled else {False: eager}
    variants = [(p, c) for c in forwards for p in precisions]
    rates: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    compile_s = {}
    for precision in precisions if compiled else []:
        trainer.autocast_dtype = autocast_dtype(precision, trainer.device)
        net.forward = forwards[True]  # type: ignore[method-assign]
        t0 = time.perf_counter()
        trainer.train_step(net, batches[0], gen, opt, teacher_stage)
        compile_s[precision] = round(time.perf_counter() - t0, 1)
    for _ in range(rounds):
        for precision, c in variants:
            trainer.autocast_dtype = autocast_dtype(precision, trainer.device)
            net.forward = forwards[c]  # type: ignore[method-assign]
            trainer.train_step(net, batches[0], gen, opt, teacher_stage)
            t0 = time.perf_counter()
            for batch in batches:
                trainer.train_step(net, batch, gen, opt, teacher_stage)
            rates[precision, c].append(frames / (time.perf_counter() - t0))
    return rates, compile_s


def profile_teacher(trainer: Trainer, batches: list[dict[str, torch.Tensor]], precisions: list[str],
                    top: int = 6) -> dict[str, list[list[Any]]]:
    """Each precision's largest ops in teacher steps (torch.profiler, share of self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    net, opt, gen = stage_setup(trainer, True)
    out = {}
    for precision in precisions:
        trainer.autocast_dtype = autocast_dtype(precision, trainer.device)
        trainer.train_step(net, batches[0], gen, opt, True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches:
                trainer.train_step(net, batch, gen, opt, True)
        ops = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
        total = sum(t for _, t in ops)
        out[precision] = [[k, round(t / total, 3)] for k, t in sorted(ops, key=lambda kv: -kv[1])[:top]]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="ped2")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/ped2/train"))
    p.add_argument("--set", action="append", default=[], metavar="S.F=V", help="config overrides, as aedmae train")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--steps", type=int, default=4, help="timed steps per precision and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also each precision with the forward torch.compile'd")
    p.add_argument("--quick", action="store_true", help="tiny preset, 2 rounds of 2 steps")
    p.add_argument("--profile", action="store_true", help="also each precision's largest ops in teacher steps")
    p.add_argument("--json")
    args = p.parse_args()
    if args.quick:
        args.preset, args.steps, args.rounds = "tiny", 2, 2
    if not Path(args.data).exists():
        sys.exit(f"no training data at {args.data} (--data DIR)")
    model_cfg, train_cfg = apply_overrides(*preset(args.preset), [*args.set, "train.device=cpu"])
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer([args.data], out, model_cfg, train_cfg, progress=False)
        gen = torch.Generator().manual_seed(0)
        picks = torch.randperm(len(trainer.dataset), generator=gen)[: args.steps * train_cfg.batch_size].tolist()
        samples = [trainer.dataset[i] for i in picks]
        batches = [default_collate(samples[i : i + train_cfg.batch_size])
                   for i in range(0, len(samples), train_cfg.batch_size)]
        backend = "inductor" if args.compile else None
        timed = {name: stage_rates(trainer, name == "teacher", batches, args.precisions, args.rounds, backend)
                 for name in ("teacher", "student")}
        profiles = profile_teacher(trainer, batches, args.precisions) if args.profile else None
    matmul = {prec: torch_matmul_gflops(DTYPES[prec], 1.0) for prec in args.precisions}
    rows = []
    base = args.precisions[0]
    for name, (rates, compile_s) in timed.items():
        for (prec, compiled), values in rates.items():
            median = statistics.median(values)
            rows.append({"stage": name, "precision": prec, "compiled": compiled, "frames_per_s": round(median, 2),
                         "runs": [round(v, 2) for v in values],
                         "vs_" + base: round(median / statistics.median(rates[base, False]), 3)}
                        | ({"compile_s": compile_s[prec]} if compiled else {}))
    print(f"preset {args.preset}, {model_cfg.image_size[0]}x{model_cfg.image_size[1]}, batch {train_cfg.batch_size}, "
          f"{torch.get_num_threads()} threads; matmul 1024^3: "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in matmul.items()))
    print(f"{'stage':8s} {'precision':14s} {'frames/s':>9s} {'vs ' + base:>8s}   runs")
    for r in rows:
        label = r["precision"] + (" compiled" if r["compiled"] else "")
        note = f"   (compile {r['compile_s']} s)" if r["compiled"] else ""
        print(f"{r['stage']:8s} {label:14s} {r['frames_per_s']:9.1f} {r['vs_' + base]:8.2f}   {r['runs']}{note}")
    for prec, ops in (profiles or {}).items():
        print(f"teacher step, {prec}, share of CPU time: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in ops))
    if args.json:
        settings = vars(args) | {"image_size": list(model_cfg.image_size), "batch_size": train_cfg.batch_size,
                                 "threads": torch.get_num_threads()}
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "settings": settings,
                                               "matmul_gflops": matmul, "rows": rows, "profile": profiles},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
