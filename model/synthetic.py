"""Synthetic anomalies: moving objects pasted over normal frames, with exact pixel masks.

The paper pasted objects cut from UBnormal (unavailable to us, and non-commercial). We paste our own:
  * objects cut from the training footage itself (foreground against the video's median background),
    scaled, rotated, recoloured and moved in a random direction, often faster than the scene's
    walkers, so a familiar object appears where, how big or how fast it never does;
  * procedural objects (ellipses, boxes, polygons with flat, noisy or striped textures);
  * optionally a folder of RGBA cut-outs supplied by the user.

Each object follows one trajectory through every frame a sample reads (t-g, t-1, t, t+1, t+g:
frame_offsets, g the model's context gap), so the motion gradient |t-1 - t+1| sees it move. Pasting
is binary: a pixel is either the object's or the frame's, and the returned mask is exactly the set of
pasted pixels in frame t.

Temporal anomalies (session 45, ``train.synthetic.temporal``) paste nothing: inside the box of something
that moves (:func:`moving_boxes`), the context frames t-g, t+g are replaced by t-kg, t+kg, so it moves k
times as fast as it did (:func:`speed_up`); frame t is untouched. They are to speed what pasted objects
are to appearance (the skip-frame pseudo anomalies of Astrid et al., BMVC 2021, here per region), and the
speed validation (benchmarks/speed_validation.py) builds its positives with the same two functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from model.config import SyntheticConfig
from model.errors import DataError
from model.frames import to_uint8
from model.window import DEFAULT_GAP

# what counts as moving: a change of more than THRESHOLD grey levels, MIN_AREA pixels and MIN_HEIGHT rows at
# least; a moving region's box is grown by MARGIN pixels
MARGIN, THRESHOLD, MIN_AREA, MIN_HEIGHT = 4, 25, 30, 6
Box = tuple[int, int, int, int]  # (y0, y1, x0, x1)


def frame_offsets(gap: int = DEFAULT_GAP) -> tuple[int, ...]:
    """Frames a sample reads: t-gap, t, t+gap for the input, t-1, t+1 for the gradient."""
    return tuple(sorted({-gap, -1, 0, 1, gap}))


@dataclass(frozen=True)
class SceneObject:
    image: np.ndarray  # (h, w, C) uint8
    mask: np.ndarray  # (h, w) bool, True on the object
    native: bool = False  # pasted at about its own size (x0.8-1.25), not at a size drawn from the config's range


@dataclass(frozen=True)
class Motion:
    """One object's straight trajectory: scale, tilt (degrees) and spin (degrees a frame), its centre in
    frame t and its velocity (pixels a frame)."""

    scale: float
    angle: float
    spin: float
    cx: float
    cy: float
    vx: float
    vy: float


def load_cutouts(folder: str | Path, channels: int) -> list[SceneObject]:
    """RGBA PNG cut-outs from a folder (alpha > 127 is the object)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: cut-outs folder not found")
    objects = []
    for f in sorted(root.glob("*.png")):
        rgba = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
            raise DataError(f"{f}: not an RGBA PNG (cut-outs need an alpha channel)")
        rgba = to_uint8(rgba)  # 16-bit cut-outs: colour and alpha on the 8-bit scale
        conv = cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(rgba[:, :, :3], conv).reshape(rgba.shape[0], rgba.shape[1], channels)
        objects.append(SceneObject(image, rgba[:, :, 3] > 127))
    if not objects:
        raise DataError(f"{root}: no *.png cut-outs")
    return objects


class AnomalySynthesizer:
    """Pastes moving objects into the frames of one training sample.

    Args:
        videos: the training videos, (N, H, W, C) uint8 each, at model resolution.
        cfg: sizes, speeds and the mix of object sources.
    """

    def __init__(self, videos: list[np.ndarray], cfg: SyntheticConfig) -> None:
        if not videos:
            raise DataError("the anomaly synthesizer needs at least one training video")
        self.videos = videos
        self.cfg = cfg.validate()
        self.height, self.width, self.channels = videos[0].shape[1:]
        self.cutouts = load_cutouts(cfg.cutouts_dir, self.channels) if cfg.cutouts_dir else []
        self._backgrounds: dict[int, np.ndarray] = {}

    # -- object sources -------------------------------------------------------------------------
    def _background(self, v: int) -> np.ndarray:
        if v not in self._backgrounds:
            video = self.videos[v]
            idx = np.linspace(0, len(video) - 1, num=min(len(video), 40)).astype(int)
            self._backgrounds[v] = np.median(video[idx], axis=0).astype(np.uint8)
        return self._backgrounds[v]

    def footage_object(self, rng: np.random.Generator) -> SceneObject | None:
        """A foreground blob (usually a person) cut from a random training frame, or None."""
        found = self.footage_blob(rng)
        return None if found is None else found[0]

    def footage_blob(self, rng: np.random.Generator) -> tuple[SceneObject, tuple[int, int, int, int]] | None:
        """A foreground blob and its box (x, y, w, h) in the frame it was cut from, or None after 5 tries."""
        for _ in range(5):
            v = int(rng.integers(len(self.videos)))
            frame, labels, blobs = self.foreground(v, int(rng.integers(len(self.videos[v]))))
            if not blobs:
                continue
            k, (x, y, w, h) = blobs[int(rng.integers(len(blobs)))]
            return SceneObject(frame[y : y + h, x : x + w].copy(), labels[y : y + h, x : x + w] == k), (x, y, w, h)
        return None

    def foreground(self, v: int, i: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, tuple[int, int, int, int]]]]:
        """Frame ``i`` of video ``v``, its connected-component labels against the video's median background,
        and the blobs big enough to be a person: [(label, (x, y, w, h))]."""
        frame = np.asarray(self.videos[v][i])
        diff = np.abs(frame.astype(np.int16) - self._background(v).astype(np.int16)).max(axis=2)
        fg = cv2.morphologyEx((diff > 25).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
        blobs = [(k, (int(stats[k, cv2.CC_STAT_LEFT]), int(stats[k, cv2.CC_STAT_TOP]), int(stats[k, cv2.CC_STAT_WIDTH]),
                      int(stats[k, cv2.CC_STAT_HEIGHT]))) for k in range(1, count)
                 if stats[k, cv2.CC_STAT_AREA] >= 30 and stats[k, cv2.CC_STAT_HEIGHT] >= 6]
        return frame, labels, blobs

    def procedural_object(self, rng: np.random.Generator) -> SceneObject:
        """An ellipse, box or polygon with a flat, noisy or striped texture."""
        h = int(rng.integers(16, 64))
        w = int(h * rng.uniform(0.4, 2.0))
        mask = np.zeros((h, w), np.uint8)
        shape = rng.integers(3)
        if shape == 0:
            cv2.ellipse(mask, (w // 2, h // 2), (max(1, w // 2 - 1), max(1, h // 2 - 1)), 0, 0, 360, 1, -1)
        elif shape == 1:
            mask[h // 8 : h - h // 8, w // 8 : w - w // 8] = 1
        else:
            n = int(rng.integers(3, 8))
            pts = np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], axis=1).astype(np.int32)
            cv2.fillPoly(mask, [cv2.convexHull(pts)], 1)
        base = rng.integers(0, 256, self.channels).astype(np.float32)
        texture = rng.integers(3)
        image = np.broadcast_to(base, (h, w, self.channels)).astype(np.float32)
        if texture == 1:
            image = image + rng.normal(0, 30, (h, w, self.channels)).astype(np.float32)
        elif texture == 2:
            period = int(rng.integers(3, 10))
            stripes = ((np.arange(w)[None, :] + np.arange(h)[:, None]) // period) % 2
            image = image * (0.5 + stripes[..., None]).astype(np.float32)
        return SceneObject(np.clip(image, 0, 255).astype(np.uint8), mask.astype(bool))

    def sample_object(self, rng: np.random.Generator) -> SceneObject:
        roll = rng.random()
        if self.cutouts and roll < 0.3:
            return self.cutouts[int(rng.integers(len(self.cutouts)))]
        if roll < self.cfg.footage_objects:
            obj = self.footage_object(rng)
            if obj is not None:
                obj = self._recolour(obj, rng)
                # drawn only when asked for, so that the default recipe's random stream stays as it was
                if self.cfg.native_size > 0 and rng.random() < self.cfg.native_size:
                    obj = replace(obj, native=True)
                return obj
        return self.procedural_object(rng)

    def _recolour(self, obj: SceneObject, rng: np.random.Generator) -> SceneObject:
        """Half the footage objects keep their look (a familiar object moving wrongly, like a cyclist
        among walkers); the others are inverted or have their brightness and contrast changed."""
        if rng.random() < 0.5:
            return obj
        img = obj.image.astype(np.float32)
        img = 255.0 - img if rng.random() < 0.4 else img * rng.uniform(0.5, 1.5) + rng.uniform(-60, 60)
        if self.channels == 3 and rng.random() < 0.3:
            img = img[:, :, rng.permutation(3)]
        return SceneObject(np.clip(img, 0, 255).astype(np.uint8), obj.mask)

    # -- pasting --------------------------------------------------------------------------------
    def paste(
        self, frames: dict[int, np.ndarray], rng: np.random.Generator
    ) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """Paste 1..max_objects moving objects into ``frames`` ({offset: (H, W, C) uint8}).

        Returns new frames and the anomaly mask (H, W) bool of frame t (offset 0): exactly the
        pixels of frame t that were replaced by an object.
        """
        out = {k: np.array(v, copy=True) for k, v in frames.items()}
        mask_t = np.zeros((self.height, self.width), bool)
        for _ in range(int(rng.integers(1, self.cfg.max_objects + 1))):
            obj = self.sample_object(rng)
            for offset, canvas, region in self._render(obj, tuple(out), self._motion(obj, rng)):
                out[offset][region] = canvas[region]
                if offset == 0:
                    mask_t |= region
        # a later object may cover an earlier one; the mask stays the union of pasted pixels
        return out, mask_t

    def _motion(self, obj: SceneObject, rng: np.random.Generator) -> Motion:
        """A random trajectory: drawn size, tilt and spin, a heading in any direction, anywhere in the frame."""
        cfg = self.cfg
        if obj.native:  # the scene's own scale: a person as big as people are in this camera
            scale = rng.uniform(0.8, 1.25)
        else:
            scale = rng.uniform(cfg.min_size, cfg.max_size) * self.height / max(obj.image.shape[0], 1)
        angle0 = rng.uniform(-30, 30)
        spin = rng.uniform(-8, 8)  # degrees per frame
        speed = self._speed(rng)
        heading = rng.uniform(0, 2 * math.pi)
        vx, vy = speed * math.cos(heading), speed * math.sin(heading)
        cx, cy = rng.uniform(0.1, 0.9) * self.width, rng.uniform(0.1, 0.9) * self.height
        return Motion(scale, angle0, spin, cx, cy, vx, vy)

    def _speed(self, rng: np.random.Generator) -> float:
        """An object's speed in pixels a frame: uniform in [min_speed_share, 1] x max_speed x the frame width."""
        return rng.uniform(self.cfg.min_speed_share, 1.0) * self.cfg.max_speed * self.width

    def _render(
        self, obj: SceneObject, offsets: tuple[int, ...], mo: Motion
    ) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(offset, canvas, the object's pixels) for each frame offset along the trajectory."""
        oh, ow = obj.mask.shape
        rendered = []
        for offset in offsets:
            m = cv2.getRotationMatrix2D((ow / 2, oh / 2), mo.angle + mo.spin * offset, mo.scale)
            m[0, 2] += mo.cx + mo.vx * offset - ow / 2
            m[1, 2] += mo.cy + mo.vy * offset - oh / 2
            size = (self.width, self.height)
            region = cv2.warpAffine(obj.mask.astype(np.uint8), m, size, flags=cv2.INTER_NEAREST) > 0
            canvas = cv2.warpAffine(obj.image, m, size, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE).reshape(self.height, self.width, -1)
            rendered.append((offset, canvas, region))
        return rendered


# -- temporal anomalies ------------------------------------------------------------------------------
def moving_boxes(before: np.ndarray, now: np.ndarray, after: np.ndarray, rng: np.random.Generator,
                 most: int) -> list[Box]:
    """Up to ``most`` boxes (y0, y1, x0, x1) around what moves between three (H, W, C) uint8 frames, in
    random order. The changed pixels are merged over a 7x7 neighbourhood first, so that an object that
    moved more than its own size (separate blobs where it was) gets one box over its whole path."""
    b, n, a = (f.astype(np.int16) for f in (before, now, after))
    diff = np.maximum(np.abs(b - n), np.abs(a - n)).max(axis=2)
    moving = cv2.morphologyEx((diff > THRESHOLD).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(moving, np.ones((7, 7), np.uint8)))
    h, w = diff.shape
    boxes = []
    for k in range(1, count):
        x, y, bw, bh, _ = (int(v) for v in stats[k])
        if int(moving[labels == k].sum()) >= MIN_AREA and bh >= MIN_HEIGHT:
            boxes.append((max(0, y - MARGIN), min(h, y + bh + MARGIN), max(0, x - MARGIN), min(w, x + bw + MARGIN)))
    return [boxes[i] for i in rng.permutation(len(boxes))[:most]]


def speed_up(frames: dict[int, np.ndarray], far: dict[int, np.ndarray], gap: int, rng: np.random.Generator,
             most: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Make 1..``most`` moving regions of a training sample move faster.

    Args:
        frames: {offset: (H, W, C) uint8} of one sample; offsets -gap and +gap are its context frames.
        far: {-1: frame t-kg, +1: frame t+kg}, k > 1 the speed-up.
    Returns new frames, with far's content inside each box of :func:`moving_boxes` (between t-kg, t, t+kg)
    in place of frames -gap and +gap, and the mask (H, W) bool of those boxes; frames and an empty mask
    when nothing moves. The motion-gradient frames (t-1, t+1) and frame t are left as they are.
    """
    boxes = moving_boxes(far[-1], frames[0], far[1], rng, int(rng.integers(1, most + 1)))
    out = {k: np.array(v, copy=True) if k in (-gap, gap) else v for k, v in frames.items()}
    mask = np.zeros(frames[0].shape[:2], bool)
    for y0, y1, x0, x1 in boxes:
        out[-gap][y0:y1, x0:x1] = far[-1][y0:y1, x0:x1]
        out[gap][y0:y1, x0:x1] = far[1][y0:y1, x0:x1]
        mask[y0:y1, x0:x1] = True
    return out, mask
