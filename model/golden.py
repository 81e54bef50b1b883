"""The golden clip: a deterministic, real-looking clip (textured static scene, walkers, one fast
intruder) generated from a seed, so that the exporter, the parity checks and the service's readiness
check all score the very same frames without shipping them (numpy + OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

GOLDEN_SEED = 20240617
GOLDEN_FRAMES = 12


def golden_clip(height: int, width: int, channels: int, frames: int = GOLDEN_FRAMES,
                seed: int = GOLDEN_SEED) -> np.ndarray:
    """(N, H, W, C) uint8 frames at model resolution."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 220, (max(4, height // 8), max(4, width // 8), 3)).astype(np.uint8)
    scene = cv2.GaussianBlur(cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC), (5, 5), 0)
    scene = np.clip(scene.astype(np.int16) + rng.integers(-8, 9, scene.shape), 0, 255).astype(np.uint8)
    walkers = [(rng.uniform(0, width), rng.uniform(0.3, 0.9) * height, rng.uniform(-1.5, 1.5)) for _ in range(6)]
    out = []
    for t in range(frames):
        f = scene.copy()
        for x, y, v in walkers:
            cx = int((x + v * t) % width)
            cv2.ellipse(f, (cx, int(y)), (max(2, width // 90), max(4, height // 25)), 0, 0, 360, (35, 30, 40), -1)
        fast_x = int(width * 0.1 + t * width * 0.06)
        cv2.rectangle(f, (fast_x, height // 2), (fast_x + width // 20, height // 2 + height // 12), (250, 240, 30), -1)
        gray_or_rgb = cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)[..., None] if channels == 1 else f[..., ::-1]
        out.append(np.ascontiguousarray(gray_or_rgb))
    return np.stack(out)
