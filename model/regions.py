"""Where in a frame the anomaly lies: the hottest regions of a per-token heatmap, as boxes.

A heatmap grid costs ``h * w`` floats per frame and a PNG a few hundred bytes; a client that only wants
to draw "look here" needs a handful of boxes. A region is a connected group of tokens (8-connectivity)
whose heat is at least ``level`` (default one half) of the frame's hottest token; regions are ranked by
their hottest token and the first ``k`` are returned.

The level is relative to the frame's own maximum, not to the alert threshold: token heat and the
frame score live on different scales (the frame score contrasts the hottest tokens with the frame's
median), so a fixed token threshold would mean nothing. Every frame therefore has at least one region;
whether it matters is the frame's ``is_anomaly``. Boxes are fractions of the frame's width and height,
so they hold for any picture size the client sent. numpy + OpenCV only (the service uses it).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LEVEL = 0.5  # half the frame's hottest token: the region's "full width at half maximum"
ALERT_REGIONS = 3  # regions drawn on alert frames (`aedmae score`, event snapshots) and listed in events


@dataclass(frozen=True)
class Region:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the frame's width and height
    peak: float  # the region's hottest token, in heatmap units
    share: float  # the region's share of the frame's total heat
    tokens: int

    def to_dict(self) -> dict[str, object]:
        return {"box": [round(v, 6) for v in self.box], "peak": round(self.peak, 6),
                "share": round(self.share, 6), "tokens": self.tokens}


def hot_regions(heatmap: np.ndarray, k: int, level: float = LEVEL) -> list[Region]:
    """The ``k`` hottest regions of one (h, w) heatmap, hottest first (ties: top-left first)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not 0.0 < level <= 1.0:
        raise ValueError(f"level must be in (0, 1], got {level}")
    heat = np.asarray(heatmap, np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"expected a non-empty (h, w) heatmap, got shape {heat.shape}")
    if not np.isfinite(heat).all():
        raise ValueError("heatmap holds NaN or infinite values")
    top = float(heat.max())
    if top <= 0.0:
        return []  # nothing hot anywhere: no region is better than another
    mask = (heat >= level * top).astype(np.uint8)
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    h, w = heat.shape
    total = float(np.clip(heat, 0, None).sum())
    regions = []
    for label in range(1, count):
        ys, xs = np.nonzero(labels == label)
        values = heat[ys, xs]
        best = int(np.argmax(values))
        regions.append((-float(values[best]), int(ys[best]) * w + int(xs[best]), Region(
            box=(int(xs.min()) / w, int(ys.min()) / h, (int(xs.max()) + 1) / w, (int(ys.max()) + 1) / h),
            peak=float(values[best]), share=float(values.sum()) / total, tokens=len(values))))
    regions.sort(key=lambda r: (r[0], r[1]))
    return [r for _, _, r in regions[:k]]
