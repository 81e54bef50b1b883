"""Choose between candidate models (weights x scoring settings) on label-free measures, by a rule
written before the measurement, then report their development-split numbers.

    python benchmarks/candidates.py --train ../shared/data/ped2/train [--test ../shared/data/ped2] \
        --candidate A model/weights/ped2 \
        --candidate B model/weights/ped2 topk_fraction=0.01 discrepancy_weight=4 contrast=ratio \
        --candidate C runs/s70 [--json FILE]

Every candidate is a checkpoint and optional `model.scoring` overrides; its token statistics and
calibration are refit on the held-out tails of the training videos, as training fits them (what
`aedmae calibrate --held-out-of TRAIN --set model.scoring.KEY=VALUE` stores). The measures are
benchmarks/grid_scoring.py's (familiar and standard synthetic validations, cross-validated
false-alarm rate, frames/s, shares above the threshold with the camera moved), with fresh validation
draws by default (seeds 10, 11 and 12, not the ones select_scoring.py chose scoring rules on); the "far"
validation (session 32) is reported beside them, not read by the rule, and so is the "speed" one
(benchmarks/speed_validation.py, session 36), which only `--rule speed` reads.
The standard validation is the first candidate's training synthesizer (or `--validate-as CKPT`'s) for every
candidate, so candidates trained with other synthetic anomalies all face the same one.
The rule (written 2026-11-29 18:45 UTC, before the first measurement; the first candidate is the
baseline): another candidate is adoptable iff its familiar AUC is >= 0.3 points above the
baseline's, its standard AUC at most 0.1 points below, and its false-alarm rate <= 3%. The adoptable
candidate with the highest familiar AUC wins, except that one within 0.1 points of it with fewer
changes wins (one change each for weights and for scoring settings that differ from the baseline's;
ties: the earlier candidate); none adoptable -> the baseline. Test AUC is reported for every candidate and
never used to choose.

`--rule speed` (written 2026-12-06 01:10 UTC, before any candidate was measured on it, after
benchmarks/speed_validation.py was seen to order the shipped weights' context gaps as the development
split does; benchmarks/RESULTS.md "A validation that sees speed"): the pasted validations are blind to
speed, so this rule reads speed_validation.py's measure (each candidate at its own gap, the same held-out
centres). A candidate is adoptable iff its speed AUC is >= 1.0 point above the baseline's with the 95%
bootstrap interval of the paired difference above 0, its familiar AUC at most 0.3 points below the
baseline's, its standard AUC at most 0.2 below, its false-alarm rate <= 3%, and at most 10% of the
held-out frames lie above its threshold with the camera moved by 4 pixels (a threshold an operator can
keep). The adoptable candidate with the highest speed AUC wins, except that one within 1.0 point of it
with fewer changes wins (ties: the earlier); none adoptable -> the baseline.

`--rule whole` (written 2026-12-07 06:50 UTC, before any model was measured on it, though after the
development numbers of two models trained with temporal anomalies had been seen; benchmarks/RESULTS.md
"T1 judged, a whole-frame speed judge"): the speed rule with speed_validation.py's whole-frame measure
(`--whole`: the whole window's context frames twice as far, no box, no seam) in place of the box one,
which training's temporal anomalies are built like. The same thresholds: whole-frame speed AUC >= 1.0
point above the baseline's with the paired interval above 0, familiar at most 0.3 below, standard at
most 0.2 below, false alarms <= 3%, moved camera <= 10%. The shipped weights score 100.00 on that
measure at twice the speed (session 46), so against them the rule adopts nothing at the default
`--whole-factor 2`; `--whole-factor F` (session 47) brings the context frames round(F x gap) from t
instead, a milder speed-up whose difficulty is set on the baseline alone before candidates are measured.
The box measure stays at 2x whatever the factor.

`--familiar-loss POINTS` (session 49, written 2026-12-07 15:00 UTC before the run it judges): under the
speed and whole rules, how far below the baseline's the familiar AUC may lie (default 0.3). Between networks
trained on different synthetic anomalies the familiar validation (a person from the footage pasted
anywhere, moving at a walker's pace) also measures what each training emphasised, and every network
trained with temporal anomalies lost 0.26-0.98 there; session 49 made it a floor against collapse (1.0)
for a fresh run only, since the development numbers of the runs that lose less than that were known.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate_scoring import load
from grid_scoring import label_free_row, print_table, test_row, validators
from speed_validation import FACTOR, REACH, bootstrap_difference, centres_of, far_offset, full_videos, unmoved_gaps

from model import checkpoint
from model.config import TrainConfig, with_scoring
from model.errors import CheckpointError, ConfigError

MIN_GAIN, MAX_LOSS, MAX_FALSE_ALARMS, NEAR_BEST = 0.003, 0.001, 0.03, 0.001
SPEED_GAIN, SPEED_FAMILIAR_LOSS, SPEED_STANDARD_LOSS, MAX_MOVED, SPEED_NEAR = 0.01, 0.003, 0.002, 0.10, 0.01
SPEED_KEYS = {"speed": ("speed", "speed"), "whole": ("whole_speed", "whole-frame speed")}  # rule: (row key, words)


def shortfalls(row: dict[str, Any], base: dict[str, Any], rule: str,
               familiar_loss: float = SPEED_FAMILIAR_LOSS) -> list[str]:
    """What keeps a candidate's ``row`` from being adoptable over the baseline's ``base`` under ``rule``
    ("familiar", "speed" or "whole"; ``familiar_loss``: how far below the baseline's the familiar AUC may lie
    under the last two), in words; empty: adoptable. The one definition of the rules' conditions."""
    def pts(x: float) -> str:
        return f"{100 * x:.2f}"

    def short(value: float, least: float, what: str) -> list[str]:
        return [] if value >= least - 1e-12 else [f"{what} {pts(value)} < {pts(least)}"]

    if rule == "familiar":
        out = short(row["familiar_auc"], base["familiar_auc"] + MIN_GAIN, "familiar AUC")
    else:
        key, what = SPEED_KEYS[rule]
        out = short(row[f"{key}_auc"], base[f"{key}_auc"] + SPEED_GAIN, f"{what} AUC")
        ci = row.get(f"{key}_vs_baseline_ci95")
        if ci is None:
            out.append(f"{what} not paired with the baseline's")
        elif ci[0] <= 0:
            out.append(f"{what} interval [{pts(ci[0])}, {pts(ci[1])}] reaches 0")
        out += short(row["familiar_auc"], base["familiar_auc"] - familiar_loss, "familiar AUC")
    out += short(row["standard_auc"], base["standard_auc"] - (MAX_LOSS if rule == "familiar" else SPEED_STANDARD_LOSS),
                 "standard AUC")
    if row["false_alarm_rate"] > MAX_FALSE_ALARMS:
        out.append(f"false alarms {100 * row['false_alarm_rate']:.1f}% > {100 * MAX_FALSE_ALARMS:.0f}%")
    if rule != "familiar" and (moved := max(row["held_out_above_threshold_moved"].values())) > MAX_MOVED:
        out.append(f"moved camera {100 * moved:.1f}% above the threshold > {100 * MAX_MOVED:.0f}%")
    return out


def choose(rows: dict[str, dict[str, Any]], changes: dict[str, int], rule: str = "familiar",
           familiar_loss: float = SPEED_FAMILIAR_LOSS) -> str:
    """The candidate ``rule`` picks from the label-free measures (the first row is the baseline; for "speed"
    rows carry "speed_auc" and, but for the baseline, "speed_vs_baseline_ci95"; for "whole" "whole_speed_...")."""
    names = list(rows)
    ok = [n for n in names[1:] if not shortfalls(rows[n], rows[names[0]], rule, familiar_loss)]
    if not ok:
        return names[0]
    key, near = ("familiar_auc", NEAR_BEST) if rule == "familiar" else (f"{SPEED_KEYS[rule][0]}_auc", SPEED_NEAR)
    best = max(rows[n][key] for n in ok)
    return min((n for n in ok if rows[n][key] >= best - near), key=lambda n: (changes[n], names.index(n)))


def weights_digest(folder: str) -> str:
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", nargs="+", action="append", required=True, metavar="NAME CKPT [KEY=VALUE]",
                   help="a name, a checkpoint folder, model.scoring overrides; the first is the baseline")
    p.add_argument("--train", required=True, help="the training footage (its held-out tails are used)")
    p.add_argument("--test", help="a labelled test set (AUC is reported, never used to choose)")
    p.add_argument("--sigma", type=float, default=3.0, help="offline smoothing, frames")
    p.add_argument("--seeds", type=int, nargs=3, default=[10, 11, 12], metavar=("STANDARD", "FAMILIAR", "FAR"))
    p.add_argument("--validate-as", metavar="CKPT",
                   help="the checkpoint whose training synthesizer makes every candidate's standard validation "
                        "(default: the first candidate's), so that a candidate trained with other synthetic "
                        "anomalies is not validated on its own")
    p.add_argument("--rule", choices=["familiar", *SPEED_KEYS], default="familiar",
                   help="familiar: session 8's rule (the default); speed: the rule that reads the speed validation; "
                        "whole: the one that reads its whole-frame form")
    p.add_argument("--whole-factor", type=float, default=FACTOR, metavar="F",
                   help="how many times as fast the whole-frame measure makes the scene (context frames round(F x "
                        "gap) from t; default 2, which leaves the shipped weights no room; session 47's judge: 1.34)")
    p.add_argument("--familiar-loss", type=float, default=None, metavar="POINTS",
                   help="speed and whole rules: how many points below the baseline's the familiar AUC may lie "
                        "(default 0.3; session 49's floor: 1.0)")
    p.add_argument("--json")
    args = p.parse_args()
    if args.rule == "familiar" and args.familiar_loss is not None:  # even at the default value: it means nothing here
        p.error("--familiar-loss is a condition of --rule speed and whole; the familiar rule asks a gain")
    points = 100 * SPEED_FAMILIAR_LOSS if args.familiar_loss is None else args.familiar_loss
    if not 0 <= points <= 100:
        p.error(f"--familiar-loss must be between 0 and 100 points, got {points:g}")
    familiar_loss = points / 100
    if len(args.candidate) < 2 or any(len(c) < 2 for c in args.candidate):
        p.error("give at least two candidates, each as NAME CKPT [KEY=VALUE ...]")
    if len({c[0] for c in args.candidate}) != len(args.candidate):
        p.error("candidate names must differ")
    rows: dict[str, dict[str, Any]] = {}
    nets, changes, speeds = {}, {}, {}
    valid_cfg = None
    if args.validate_as:
        try:
            valid_cfg = checkpoint.train_config(checkpoint.read_meta(args.validate_as)) or TrainConfig()
        except CheckpointError as e:
            p.error(f"--validate-as: {e}")
    loaded = {}  # every candidate loaded and checked before the first is measured (minutes each)
    for name, folder, *overrides in args.candidate:
        net, _, train_cfg, cache, train, held = load(folder, args.train)
        valid_cfg = valid_cfg or train_cfg
        try:
            net.cfg = with_scoring(net.cfg, overrides)
        except ConfigError as e:
            p.error(f"candidate {name}: {e}")
        gap = net.cfg.scoring.context_gap
        if unmoved_gaps([gap], args.whole_factor):
            p.error(f"--whole-factor {args.whole_factor:g} moves no context frame of candidate {name} (gap {gap})")
        reach = max(REACH, far_offset(gap, FACTOR if args.rule == "speed" else args.whole_factor))
        if args.rule != "familiar" and not centres_of(full_videos(train, held), reach):
            p.error(f"--rule {args.rule}: candidate {name}: no held-out frame of {args.train} has {reach} frames on "
                    "both sides, so the speed validation cannot be measured (footage too short)")
        loaded[name] = folder, overrides, net, train, held
    for name, (folder, overrides, net, train, held) in loaded.items():
        net.eval()
        if held is train:  # footage too short to hold out tails: measured on training frames, and said so
            print(f"{name}: nothing held out of {args.train}; measuring on the training frames", file=sys.stderr)
        scorer, row, speeds[name] = label_free_row(net, held, validators(train, valid_cfg, tuple(args.seeds)), train,
                                                    args.whole_factor)
        if args.rule != "familiar" and speeds[name][SPEED_KEYS[args.rule][0]] is None:
            p.error(f"--rule {args.rule}: the {SPEED_KEYS[args.rule][1]} validation of candidate {name} could not be "
                    "measured (above)")
        row["held_out"] = held is not train
        nets[name] = (net, scorer, weights_digest(folder))
        base_net, _, base_digest = next(iter(nets.values()))
        changes[name] = int(nets[name][2] != base_digest) + int(net.cfg.scoring != base_net.cfg.scoring)
        rows[name] = {"model": folder, "overrides": overrides, "changes": changes[name]} | row
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    base_speeds = next(iter(speeds.values()))
    for name in list(rows)[1:]:
        for key, what in SPEED_KEYS.values():
            rows[name][f"{key}_vs_baseline_ci95"] = None
            if base_speeds[key] is not None and speeds[name][key] is not None:
                try:
                    ci = bootstrap_difference(speeds[name][key], base_speeds[key])
                    rows[name][f"{key}_vs_baseline_ci95"] = list(ci)
                except ValueError as e:  # a gap above 6 reaches further: other centres, nothing to pair
                    print(f"{name}: no paired {what} comparison with the baseline: {e}", file=sys.stderr)
    # label-free: decided before any test label is read
    chosen = choose(rows, changes, args.rule, familiar_loss)
    base_name = next(iter(rows))
    for name in list(rows)[1:]:
        r = rows[name]
        r["shortfalls"] = shortfalls(r, rows[base_name], args.rule, familiar_loss)
        paired = ""
        for key, what in SPEED_KEYS.values():
            if (ci := r[f"{key}_vs_baseline_ci95"]) is not None:
                paired += (f"{what} {100 * (r[f'{key}_auc'] - rows[base_name][f'{key}_auc']):+.2f} "
                           f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] against {base_name}; ")
        print(f"{name}: {paired}" + ("not adoptable: " + "; ".join(r["shortfalls"]) if r["shortfalls"]
                                     else "adoptable"), flush=True)
    print(f"chosen on the label-free measures: {chosen}", flush=True)
    for name, (net, scorer, _) in nets.items() if args.test else ():
        rows[name]["test"] = test_row(net, scorer, args.test, cache, args.sigma)
        print(f"{name} test: {json.dumps(rows[name]['test'])}", flush=True)
    print_table(rows, chosen, "candidate")
    if args.json:
        Path(args.json).write_text(json.dumps({"chosen": chosen, "rule": args.rule, "seeds": args.seeds,
                                               "whole_factor": args.whole_factor,
                                               "familiar_loss": familiar_loss, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
