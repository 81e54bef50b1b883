"""Training samples: frames t-g, t, t+g (g = model.scoring.context_gap), the motion gradient
|t-1 - t+1|, the clean frame t and the anomaly mask, with synthetic anomalies pasted into a
configurable fraction of samples."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from model.config import ModelConfig, TrainConfig
from model.errors import ConfigError
from model.frames import MIN_FRAMES, FrameCache, VideoSource, discover
from model.synthetic import AnomalySynthesizer, frame_offsets, speed_up
from model.window import DEFAULT_GAP

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    """A contiguous run of frames of one video: (N, H, W, C) uint8."""

    video: str
    frames: np.ndarray
    start: int  # index of the first frame in the original video

    @property
    def name(self) -> str:
        """``video[start:end]``, as calibrations record their source."""
        return f"{self.video}[{self.start}:{self.start + len(self.frames)}]"


def load_segments(
    paths: list[str], model_cfg: ModelConfig, train_cfg: TrainConfig, cache: FrameCache
) -> tuple[list[Segment], list[Segment], dict[str, object]]:
    """Decode (once, through the cache) every video under ``paths`` and split each into a training
    head and a held-out tail (``train_cfg.holdout_fraction``; no tail when it would be too short);
    the videos named in ``train_cfg.holdout_videos`` are held out whole.

    Returns (train segments, held-out segments, data summary for the checkpoint).
    """
    sources: list[VideoSource] = []
    for p in paths:
        sources.extend(discover(p))
    whole = set(train_cfg.holdout_videos)
    if missing := whole - {src.name for src in sources}:
        raise ConfigError(f"train.holdout_videos: no video named {', '.join(sorted(missing))} in the footage "
                          f"({', '.join(src.name for src in sources)})")
    if sources and all(src.name in whole for src in sources):
        raise ConfigError("train.holdout_videos holds out every video: nothing is left to train on")
    train, held = [], []
    total = 0
    for src in sources:
        frames = cache.load(src, model_cfg.image_size, model_cfg.channels)
        total += len(frames)
        if src.name in whole:
            held.append(Segment(src.name, frames, 0))
            continue
        n_held = round(len(frames) * train_cfg.holdout_fraction)
        if n_held < MIN_FRAMES or len(frames) - n_held < MIN_FRAMES:
            n_held = 0
        cut = len(frames) - n_held
        train.append(Segment(src.name, frames[:cut], 0))
        if n_held:
            held.append(Segment(src.name, frames[cut:], cut))
    summary = {
        "sources": [str(Path(p).resolve()) for p in paths],
        "videos": len(sources),
        "frames": total,
        "train_frames": sum(len(s.frames) for s in train),
        "holdout_frames": sum(len(s.frames) for s in held),
        "holdout_videos": sorted(whole),
    }
    return train, held, summary


def shift_image(image: ArrayT, dy: int, dx: int, axes: tuple[int, int] = (0, 1)) -> ArrayT:
    """``image`` (a numpy array or a torch tensor) moved down by dy and right by dx pixels along
    ``axes`` (rows, columns), the top and left edges repeated into the space it leaves; the shape is
    unchanged. Training (numpy) and the scoring's grid shifts (torch, traced into the ONNX graph as
    a gather) share this one definition."""
    for axis, step in zip(axes, (dy, dx), strict=True):
        if step:
            if isinstance(image, torch.Tensor):  # indices made where the image is: a host-to-device copy
                # of them would be a synchronous copy inside every batch, which a CUDA graph cannot capture
                rows_t = (torch.arange(int(image.shape[axis]), device=image.device) - step).clamp(min=0)
                image = image.index_select(axis, rows_t)
            else:
                image = np.take(image, np.clip(np.arange(int(image.shape[axis])) - step, 0, None), axis=axis)
    return image


def motion_gradient(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """|before - after| per channel: (H, W, C) uint8 pair -> (C, H, W) float32 in [0, 255]."""
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).astype(np.float32)
    return diff.transpose(2, 0, 1)


class TrainingClips(Dataset[dict[str, torch.Tensor]]):
    """One sample per centre frame t (every ``frame_step``-th) of every segment.

    A sample is a dict:
        frames   (3, H, W, C) uint8   frames t-gap, t, t+gap (indices clamped to the segment; gap is
                                      the model's model.scoring.context_gap, in training and validations)
        gradient (C, H, W)    float32 |frame t-1 - frame t+1|, 0..255
        target   (C, H, W)    uint8   the clean frame t (no pasted object)
        mask     (1, H, W)    float32 1 on pasted anomaly pixels of frame t (or on the boxes of regions
                                      made faster, train.synthetic.temporal), else 0

    With ``max_shift`` > 0 all of them are moved by the same random (dy, dx) in 0..max_shift pixels
    (:func:`shift_image`), so objects meet the token grid at every phase.

    Randomness (which samples get anomalies, and which) comes from (seed, epoch, index), so a
    sample is the same whatever worker builds it.
    """

    def __init__(
        self,
        segments: list[Segment],
        synthesizer: AnomalySynthesizer | None,
        fraction: float,
        frame_step: int = 1,
        seed: int = 0,
        max_shift: int = 0,
        gap: int = DEFAULT_GAP,
    ) -> None:
        self.segments = segments
        self.gap, self.offsets = gap, frame_offsets(gap)
        self.synthesizer = synthesizer
        self.fraction = fraction if synthesizer is not None else 0.0
        self.seed = seed
        if max_shift < 0:
            raise ConfigError(f"train.grid_shift must be 0 or more pixels, got {max_shift}")
        self.max_shift = max_shift
        self.epoch = 0
        self.index = [(s, t) for s, seg in enumerate(segments) for t in range(0, len(seg.frames), frame_step)]

    def _temporal(self, rng: np.random.Generator) -> bool:
        """Whether a sample without a pasted object gets temporal anomalies; no draw when they are off."""
        share = self.synthesizer.cfg.temporal if self.synthesizer is not None else 0.0
        return share > 0 and rng.random() < share

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, t = self.index[i]
        video = self.segments[s].frames
        last = len(video) - 1
        clean = {o: np.array(video[min(max(t + o, 0), last)]) for o in self.offsets}  # copies off the memmap
        frames = clean
        mask = np.zeros(clean[0].shape[:2], np.float32)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        if self.synthesizer is not None and rng.random() < self.fraction:
            frames, pasted = self.synthesizer.paste(clean, rng)
            mask = pasted.astype(np.float32)
        elif self.synthesizer is not None and self.fraction > 0 and self._temporal(rng):
            reach = self.gap * self.synthesizer.cfg.temporal_factor
            if reach <= min(t, last - t):  # only inside the segment: a clamped frame moves no faster
                far = {-1: np.asarray(video[t - reach]), 1: np.asarray(video[t + reach])}
                frames, boxes = speed_up(clean, far, self.gap, rng, self.synthesizer.cfg.max_objects)
                mask = boxes.astype(np.float32)
        if self.max_shift > 0:  # drawn after the paste so that the anomalies do not depend on it
            dy, dx = (int(v) for v in rng.integers(0, self.max_shift + 1, size=2))
            frames = {o: shift_image(f, dy, dx) for o, f in frames.items()}
            clean = {0: shift_image(clean[0], dy, dx)}
            mask = shift_image(mask, dy, dx)
        return {
            "frames": torch.from_numpy(np.stack([frames[-self.gap], frames[0], frames[self.gap]])),
            "gradient": torch.from_numpy(motion_gradient(frames[-1], frames[1])),
            "target": torch.from_numpy(np.ascontiguousarray(clean[0].transpose(2, 0, 1))),
            "mask": torch.from_numpy(mask[None]),
        }


def write_anomaly_examples(dataset: TrainingClips, out_dir: str | Path, count: int, seed: int = 0) -> list[Path]:
    """Write ``count`` samples with pasted anomalies as PNG strips a person can look at:
    frame t-3 | frame t (anomaly outlined in red) | frame t+3 | motion gradient | anomaly mask."""
    import cv2

    if dataset.synthesizer is None:
        raise ValueError("the dataset has no anomaly synthesizer (synthetic.fraction is 0)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved_fraction, dataset.fraction = dataset.fraction, 1.0
    rng = np.random.default_rng(seed)
    paths = []
    try:
        for k, i in enumerate(rng.choice(len(dataset), size=min(count, len(dataset)), replace=False)):
            s = dataset[int(i)]
            frames = [f.numpy() for f in s["frames"]]
            if frames[0].shape[2] == 1:
                frames = [np.repeat(f, 3, axis=2) for f in frames]
            mask = s["mask"][0].numpy().astype(np.uint8)
            outlined = frames[1].copy()
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(outlined, contours, -1, (255, 0, 0), 1)
            grad = np.clip(s["gradient"].numpy().max(axis=0) * 4, 0, 255).astype(np.uint8)
            panels = [frames[0], outlined, frames[2], np.repeat(grad[..., None], 3, 2),
                      np.repeat(mask[..., None] * 255, 3, 2)]
            strip = np.concatenate(panels, axis=1)
            path = out / f"anomaly_{k:02d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
            paths.append(path)
    finally:
        dataset.fraction = saved_fraction
    return paths
