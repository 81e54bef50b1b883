"""Heatmap overlays for people to look at (numpy + OpenCV only; the service's preview uses it too)."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from model.regions import Region


def overlay_heatmap(frame: np.ndarray, heatmap: np.ndarray, vmax: float, alpha: float = 0.45) -> np.ndarray:
    """A frame (H, W, C) uint8 RGB or gray with a per-token heatmap (h, w) blended on top.

    Heat is scaled to [0, vmax] (e.g. the calibration threshold's token level) and drawn with the
    JET colour map; cold tokens stay transparent so the scene remains readable.
    """
    rgb = frame if frame.shape[2] == 3 else np.repeat(frame, 3, axis=2)
    h, w = rgb.shape[:2]
    heat = np.clip(np.asarray(heatmap, np.float32) / max(vmax, 1e-12), 0, 1)
    heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    weight = (alpha * heat)[..., None]
    return (rgb * (1 - weight) + colour * weight).astype(np.uint8)


def caption(image: np.ndarray, text: str, alert: bool = False, scale: float = 1.0) -> np.ndarray:
    """Draw a one-line caption in the top-left corner (red when ``alert``); ``scale`` sizes the text."""
    out = image.copy()
    colour = (255, 40, 40) if alert else (255, 255, 255)
    org, size = (round(4 * scale), round(14 * scale)), 0.4 * scale
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), max(3, round(3 * scale)), cv2.LINE_AA)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, colour, max(1, round(scale)), cv2.LINE_AA)
    return out


def draw_regions(image: np.ndarray, regions: Iterable[Region]) -> np.ndarray:
    """Outline each region's box (fractions of the picture's size) in white over a dark edge."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(1, round(w / 320))
    for region in regions:
        x0, y0, x1, y1 = region.box
        p0, p1 = (round(x0 * w), round(y0 * h)), (round(x1 * w) - 1, round(y1 * h) - 1)
        cv2.rectangle(out, p0, p1, (0, 0, 0), thick + 2)
        cv2.rectangle(out, p0, p1, (255, 255, 255), thick)
    return out
