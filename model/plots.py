"""Pictures of an evaluation: ROC curves, score timelines with the ground truth shaded, heatmap strips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model.metrics import roc_curve
from model.overlay import caption, overlay_heatmap


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path) -> Path:
    """curves: {label: (labels, scores, auc)}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, scores, auc) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {100 * auc:.1f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="frame-level ROC (all frames pooled)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_timelines(series: dict[str, dict[str, np.ndarray]], path: Path, threshold: float | None) -> Path:
    """:func:`timeline_figure`, written to ``path``."""
    fig = timeline_figure(series, threshold)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def timeline_figure(series: dict[str, dict[str, np.ndarray]], threshold: float | None) -> Any:
    """Score timelines, one row per video. series: {video: {"score": (N,), "smoothed": (N,)[, "labels":
    (N,)][, "cuts": frames][, "frames": (N,) frame numbers, default 0..N-1]}}; labelled abnormal frames
    shaded (footage without labels, as `aedmae score` plots it, has no such entry), scene cuts (the
    first frame of each new clip, model.cuts) drawn as dotted lines."""
    plt = _pyplot()
    n = len(series)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.6 * n + 0.6), squeeze=False)
    for ax, (name, s) in zip(axes[:, 0], series.items(), strict=True):
        x = s["frames"] if "frames" in s else np.arange(len(s["score"]))
        if "labels" in s:
            ax.fill_between(x, 0, 1, where=s["labels"] > 0, color="tab:red", alpha=0.15, step="mid",
                            transform=ax.get_xaxis_transform(), label="labelled abnormal")
        ax.plot(x, s["score"], lw=0.8, color="tab:blue", alpha=0.6, label="score")
        ax.plot(x, s["smoothed"], lw=1.4, color="tab:blue", label="smoothed")
        if threshold is not None:
            ax.axhline(threshold, color="tab:orange", lw=1, ls="--", label="alert threshold")
        for k, cut in enumerate(s.get("cuts", ())):
            ax.axvline(cut - 0.5, color="0.25", lw=1, ls=":", label="scene cut" if k == 0 else None)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.set_xlim(0, max(1, x[-1] if len(x) else 0))
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    return fig


def heatmap_strip(frames: np.ndarray, heatmaps: np.ndarray, scores: np.ndarray, labels: np.ndarray | None,
                  vmax: float, path: Path, count: int = 6) -> Path:
    """A row of frames spread over the clip, each with its heatmap and score drawn on it."""
    import cv2

    idx = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).astype(int)
    tiles = []
    for i in idx:
        tag = "" if labels is None else (" GT:abnormal" if labels[i] else " GT:normal")
        tile = overlay_heatmap(np.asarray(frames[i]), heatmaps[i], vmax)
        tiles.append(caption(tile, f"#{i} {scores[i]:.2f}{tag}", alert=bool(labels is not None and labels[i])))
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(tiles, axis=1), cv2.COLOR_RGB2BGR))
    return path
