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
weights compared by content, model.checkpoint.weights_digest, since session 52: before, by the file's
SHA-256, which counted a re-saved copy of the same weights as a change; ties: the earlier candidate);
none adoptable -> the baseline. Test AUC is reported for every candidate and never used to choose.

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

`--rule teacher` (drafted 2026-12-07 23:47 UTC after the development numbers of two 34+8 runs were seen, so it
may judge only a fresh run; thresholds fixed 2026-12-08 00:07 UTC before any model was measured on it;
benchmarks/RESULTS.md "The teacher's minutes ship"): the measure is the training log's learning-curve
column, the synthetic validation AUC of the raw teacher error on one grid (nothing fitted), on the held-out
tails with the baseline's training synthesizer, the mean of three fresh draws (`--teacher-seeds`, default
50 51 52). Of four runs it ordered the one without motion weighting last and the two 34+8 runs first, as the
development split does, where the fitted-score validations above could not tell them apart. A candidate is
adoptable iff its teacher AUC is >= 0.2 points above the baseline's with the paired bootstrap interval (pairs
resampled within each draw) above 0, its familiar AUC at most `--familiar-loss` (0.3) below, standard at
most 0.1 below, false alarms <= 3%, whole-frame speed AUC (at `--whole-factor`) at most 1.0 below, moved
camera <= 10%. The adoptable candidate with the highest teacher AUC wins, except that one within 0.2 points
of it with fewer changes wins (ties: the earlier); none adoptable -> the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from ablate_scoring import load
from grid_scoring import label_free_row, print_table, stage, test_row, validators
from speed_validation import FACTOR, REACH, bootstrap_difference, centres_of, far_offset, full_videos, unmoved_gaps

from model import checkpoint
from model.config import TrainConfig, with_scoring
from model.errors import CheckpointError, ConfigError
from model.evaluation import one_grid, synthetic_pairs
from model.metrics import roc_auc
from model.scoring import ONE_VIEW

MIN_GAIN, MAX_LOSS, MAX_FALSE_ALARMS, NEAR_BEST = 0.003, 0.001, 0.03, 0.001
SPEED_GAIN, SPEED_FAMILIAR_LOSS, SPEED_STANDARD_LOSS, MAX_MOVED, SPEED_NEAR = 0.01, 0.003, 0.002, 0.10, 0.01
TEACHER_GAIN, WHOLE_LOSS = 0.002, 0.01
# the measures a rule compares with the baseline's, pair by pair: rule: (row key, words, gain asked, near best)
PAIRED = {"speed": ("speed", "speed", SPEED_GAIN, SPEED_NEAR),
          "whole": ("whole_speed", "whole-frame speed", SPEED_GAIN, SPEED_NEAR),
          "teacher": ("teacher", "teacher error", TEACHER_GAIN, TEACHER_GAIN)}


def shortfalls(row: dict[str, Any], base: dict[str, Any], rule: str,
               familiar_loss: float = SPEED_FAMILIAR_LOSS) -> list[str]:
    """What keeps a candidate's ``row`` from being adoptable over the baseline's ``base`` under ``rule``
    ("familiar", "speed", "whole" or "teacher"; ``familiar_loss``: how far below the baseline's the familiar
    AUC may lie under the last three), in words; empty: adoptable. The one definition of the rules' conditions."""
    def pts(x: float) -> str:
        return f"{100 * x:.2f}"

    def short(value: float, least: float, what: str) -> list[str]:
        return [] if value >= least - 1e-12 else [f"{what} {pts(value)} < {pts(least)}"]

    if rule == "familiar":
        out = short(row["familiar_auc"], base["familiar_auc"] + MIN_GAIN, "familiar AUC")
    else:
        key, what, gain, _ = PAIRED[rule]
        out = short(row[f"{key}_auc"], base[f"{key}_auc"] + gain, f"{what} AUC")
        ci = row.get(f"{key}_vs_baseline_ci95")
        if ci is None:
            out.append(f"{what} not paired with the baseline's")
        elif ci[0] <= 0:
            out.append(f"{what} interval [{pts(ci[0])}, {pts(ci[1])}] reaches 0")
        out += short(row["familiar_auc"], base["familiar_auc"] - familiar_loss, "familiar AUC")
    out += short(row["standard_auc"], base["standard_auc"] - (SPEED_STANDARD_LOSS if rule in ("speed", "whole")
                                                              else MAX_LOSS), "standard AUC")
    if row["false_alarm_rate"] > MAX_FALSE_ALARMS:
        out.append(f"false alarms {100 * row['false_alarm_rate']:.1f}% > {100 * MAX_FALSE_ALARMS:.0f}%")
    if rule == "teacher":
        out += short(row["whole_speed_auc"], base["whole_speed_auc"] - WHOLE_LOSS, "whole-frame speed AUC")
    if rule != "familiar" and (moved := max(row["held_out_above_threshold_moved"].values())) > MAX_MOVED:
        out.append(f"moved camera {100 * moved:.1f}% above the threshold > {100 * MAX_MOVED:.0f}%")
    return out


def choose(rows: dict[str, dict[str, Any]], changes: dict[str, int], rule: str = "familiar",
           familiar_loss: float = SPEED_FAMILIAR_LOSS) -> str:
    """The candidate ``rule`` picks from the label-free measures (the first row is the baseline; for "speed"
    rows carry "speed_auc" and, but for the baseline, "speed_vs_baseline_ci95"; for "whole" "whole_speed_...",
    for "teacher" "teacher_..." and "whole_speed_auc")."""
    names = list(rows)
    ok = [n for n in names[1:] if not shortfalls(rows[n], rows[names[0]], rule, familiar_loss)]
    if not ok:
        return names[0]
    key, near = ("familiar_auc", NEAR_BEST) if rule == "familiar" else (f"{PAIRED[rule][0]}_auc", PAIRED[rule][3])
    best = max(rows[n][key] for n in ok)
    return min((n for n in ok if rows[n][key] >= best - near), key=lambda n: (changes[n], names.index(n)))


def teacher_measure(net: Any, held: list[Any], synthesizer: Any, seeds: list[int]) -> dict[str, Any]:
    """The teacher rule's measure: the raw teacher error's synthetic validation AUC on one grid (the training
    log's column), ``synthesizer`` drawn at each of ``seeds`` (a draw depends on its seed alone: the
    synthesizer keeps nothing between draws but its cache of each video's background); {"auc": their mean, "aucs",
    "draws": [{"y", "owner", "score", "centre_frames"}] for bootstrap_difference}: sample i and i + N of a draw
    are one held-out frame, clean and pasted, so a pair is resampled whole."""
    draws = []
    for seed in seeds:
        stage(f"teacher validation (raw teacher error, one grid), draw {seed}")
        y, te, dis = synthetic_pairs(net, held, synthesizer, seed=seed, views=ONE_VIEW)
        n = len(y) // 2
        draws.append({"y": y, "owner": np.r_[np.arange(n), np.arange(n)],
                      "score": one_grid(net, te, dis).teacher_error.numpy(),
                      # what fixes the draw: two candidates pair only where these agree
                      "centre_frames": [seed, net.cfg.scoring.context_gap, [len(s.frames) for s in held]]})
    aucs = [roc_auc(d["y"], d["score"]) for d in draws]
    return {"auc": float(np.mean(aucs)), "aucs": aucs, "draws": draws}


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
    p.add_argument("--teacher-seeds", type=int, nargs=3, default=[50, 51, 52], metavar="SEED",
                   help="the three draws of the teacher measure (mean of their AUCs)")
    p.add_argument("--rule", choices=["familiar", *PAIRED], default="familiar",
                   help="familiar: session 8's rule (the default); speed: the rule that reads the speed validation; "
                        "whole: the one that reads its whole-frame form; teacher: the one that reads the raw "
                        "teacher error (session 52)")
    p.add_argument("--whole-factor", type=float, default=FACTOR, metavar="F",
                   help="how many times as fast the whole-frame measure makes the scene (context frames round(F x "
                        "gap) from t; default 2, which leaves the shipped weights no room; session 47's judge: 1.34)")
    p.add_argument("--familiar-loss", type=float, default=None, metavar="POINTS",
                   help="speed, whole and teacher rules: how many points below the baseline's the familiar AUC may lie "
                        "(default 0.3; session 49's floor: 1.0)")
    p.add_argument("--json")
    args = p.parse_args()
    if args.rule == "familiar" and args.familiar_loss is not None:  # even at the default value: it means nothing here
        p.error("--familiar-loss is a condition of --rule speed, whole and teacher; the familiar rule asks a gain")
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
        synthesizers = validators(train, valid_cfg, tuple(args.seeds))
        scorer, row, speeds[name] = label_free_row(net, held, synthesizers, train, args.whole_factor)
        # the standard validation's synthesizer: the baseline's training one, its backgrounds computed once
        teacher = teacher_measure(net, held, synthesizers["standard"][0], args.teacher_seeds)
        speeds[name]["teacher"] = teacher["draws"]  # a list of draws: bootstrap_difference pairs them in order
        row["teacher_auc"], row["teacher_aucs"] = teacher["auc"], teacher["aucs"]
        needs = {"familiar": None, "teacher": "whole"}.get(args.rule, args.rule)  # the speed measure it reads
        if needs and speeds[name][PAIRED[needs][0]] is None:
            p.error(f"--rule {args.rule}: the {PAIRED[needs][1]} validation of candidate {name} could not be "
                    "measured (above)")
        row["held_out"] = held is not train
        nets[name] = (net, scorer, checkpoint.weights_digest(folder))
        base_net, _, base_digest = next(iter(nets.values()))
        changes[name] = int(nets[name][2] != base_digest) + int(net.cfg.scoring != base_net.cfg.scoring)
        rows[name] = {"model": folder, "overrides": overrides, "changes": changes[name]} | row
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    base_speeds = next(iter(speeds.values()))
    for name in list(rows)[1:]:
        for key, what, *_ in PAIRED.values():
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
        for key, what, *_ in PAIRED.values():
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
                                               "teacher_seeds": args.teacher_seeds,
                                               "whole_factor": args.whole_factor,
                                               "familiar_loss": familiar_loss, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
