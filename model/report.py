"""``aedmae evaluate``: score a labelled test set and write metrics.json, scores.csv and pictures."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from model import checkpoint
from model.calibration import ALERT
from model.datasets import read_test_set
from model.errors import DataError
from model.evaluation import ablation_scorers, apply_scorer, metrics_for, score_test_set, scorer_from_meta
from model.frames import FrameCache
from model.metrics import REFERENCE_SIGMA, OnlineSmoother, gaussian_smooth
from model.plots import heatmap_strip, plot_roc, plot_timelines


def _pct(x: float | None) -> str:
    return "  n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:5.1f}"


def format_table(metrics: dict[str, Any]) -> str:
    raw, sm, on, ca = metrics["raw"], metrics["smoothed"], metrics["online"], metrics["causal"]
    online = f"smoothed (online, +{metrics['online_delay_frames']} frames)"
    lines = [f"{'':28s} {'micro':>6s} {'macro':>6s}",
             f"{'raw':28s} {_pct(raw['micro_auc']):>6s} {_pct(raw['macro_auc']):>6s}",
             f"{'smoothed (offline, centred)':28s} {_pct(sm['micro_auc']):>6s} {_pct(sm['macro_auc']):>6s}",
             f"{online:28s} {_pct(on['micro_auc']):>6s} {_pct(on['macro_auc']):>6s}",
             f"{'smoothed (online, causal)':28s} {_pct(ca['micro_auc']):>6s} {_pct(ca['macro_auc']):>6s}",
             f"{'teacher error only (raw)':28s} {_pct(metrics['teacher_error_only']):>6s}",
             f"{'discrepancy only (raw)':28s} {_pct(metrics['discrepancy_only']):>6s}"]
    if "reference_protocol" in metrics:
        ref = metrics["reference_protocol"]
        lines.append(f"{'reference post-processing':28s} {_pct(ref['score']):>6s}   (teacher error only "
                     f"{_pct(ref['teacher_error']).strip()}, a constant score {_pct(ref['constant']).strip()}: "
                     "offline, whole-video min-max)")
    lines += ["", "per video (raw AUC):"]
    for name, auc in raw["per_video_auc"].items():
        lines.append(f"  {name:12s} {_pct(auc) if auc is not None else 'single class'}")
    if raw["single_class_videos"]:
        lines.append(f"macro AUC skips single-class videos: {', '.join(raw['single_class_videos'])}")
    if "detection_online" in metrics:
        d = metrics["detection_online"]
        lines.append(f"at the calibrated threshold (online smoothing): precision {_pct(d['precision'])}, "
                     f"recall {_pct(d['recall'])}, F1 {_pct(d['f1'])}, false alarms {_pct(d['false_alarm_rate'])}%")
    for name, value in metrics.get("ablations", {}).items():
        lines.append(f"scoring variant {name:26s} micro {_pct(value['raw'])}, smoothed {_pct(value['smoothed'])}")
    return "\n".join(lines)


def run_evaluation(model_path: str | Path, data: str | Path, out_dir: str | Path, layout: str = "auto",
                   sigma: float = 3.0, examples: list[str] | None = None, cache_dir: str | Path | None = None,
                   progress: bool = True, ablations: bool = False, delay: int | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on a labelled test set; returns what metrics.json holds. ``delay``: frames
    the online smoother waits for (None: its whole window, as the service does by default)."""
    from model.frames import default_cache_dir

    out = Path(out_dir)
    net, meta = checkpoint.load(model_path)
    scorer = scorer_from_meta(net, meta)
    layout_name, videos = read_test_set(data, layout)
    names = [v.name for v in videos]
    unknown = [name for name in examples or [] if name not in names]
    if unknown:  # before minutes of scoring, not after them
        raise DataError(f"--examples {' '.join(unknown)}: no such test video in {data}; its videos are "
                        + ", ".join(names))
    out.mkdir(parents=True, exist_ok=True)  # after the inputs are read: a bad --data leaves no empty folder
    raw = score_test_set(net, videos, FrameCache(cache_dir or default_cache_dir()), progress)
    results = {k: (labels, apply_scorer(scorer, errors)) for k, (labels, errors, _) in raw.items()}
    threshold = scorer.calibration.threshold if scorer.calibration else None
    metrics: dict[str, Any] = metrics_for(results, sigma, threshold, delay)
    if ablations:
        metrics["ablations"] = {}
        for name, variant in ablation_scorers(scorer).items():
            res = {k: (labels, apply_scorer(variant, errors)) for k, (labels, errors, _) in raw.items()}
            m = metrics_for(res, sigma, None)
            metrics["ablations"][name] = {"raw": m["raw"]["micro_auc"], "smoothed": m["smoothed"]["micro_auc"]}
    metrics.update({
        "micro_auc": metrics["raw"]["micro_auc"], "macro_auc": metrics["raw"]["macro_auc"],
        "per_video": metrics["raw"]["per_video_auc"],
        "frames": int(sum(len(y) for y, _ in results.values())),
        "model": {"path": str(Path(model_path).resolve()), "code_version": meta.get("code_version"),
                  "config": meta["model"], **scorer.describe()},
        "settings": {"data": str(Path(data).resolve()), "layout": layout_name, "sigma": sigma,
                     "online_delay_frames": metrics["online_delay_frames"],
                     "smoothing": "gaussian, edge-repeating (offline); online: the same gaussian cut "
                                  "online_delay_frames after the frame (the service's); causal: cut at the frame",
                     "reference_protocol": f"the reference code's non-Avenue evaluation: zero-padded gaussian, "
                                           f"sigma {REFERENCE_SIGMA:g} frames, then min-max per video"},
    })
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    _write_scores(out / "scores.csv", results, sigma)
    _write_pictures(out, results, raw, scorer, OnlineSmoother(sigma, delay), examples)
    return metrics


def _write_scores(path: Path, results: dict[str, Any], sigma: float) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "frame", "label", "score", "teacher_error", "discrepancy", "calibrated", "smoothed"])
        for name, (labels, s) in results.items():
            smoothed = gaussian_smooth(s.score.numpy(), sigma)
            for i in range(len(labels)):
                w.writerow([name, i, int(labels[i]), f"{s.score[i]:.6g}", f"{s.teacher_error[i]:.6g}",
                            f"{s.discrepancy[i]:.6g}", f"{s.calibrated[i]:.6g}", f"{smoothed[i]:.6g}"])


def _write_pictures(out: Path, results: dict[str, Any], raw: dict[str, Any], scorer: Any,
                    smoother: OnlineSmoother, examples: list[str] | None) -> None:
    labels = np.concatenate([y for y, _ in results.values()])
    pooled = {"raw": np.concatenate([s.score.numpy() for _, s in results.values()]),
              "smoothed": np.concatenate([gaussian_smooth(s.score.numpy(), smoother.sigma)
                                          for _, s in results.values()])}
    from model.metrics import roc_auc

    plot_roc({k: (labels, v, roc_auc(labels, v)) for k, v in pooled.items()}, out / "roc.png")
    calibrated = scorer.calibration is not None
    series = {}
    for name, (y, s) in results.items():
        values = s.calibrated.numpy() if calibrated else s.score.numpy()
        series[name] = {"labels": y, "score": values, "smoothed": smoother.smooth(values)}
    plot_timelines(series, out / "timelines.png", ALERT if calibrated else None)
    chosen = examples if examples is not None else list(results)[:3]
    vmax = float(np.quantile(np.concatenate([s.heatmap.numpy().ravel() for _, s in results.values()]), 0.999))
    for name in chosen:  # (run_evaluation refused unknown names before scoring)
        y, s = results[name]
        heatmap_strip(raw[name][2], s.heatmap.numpy(), s.score.numpy(), y, vmax, out / f"heatmaps_{name}.png")
