"""Video sources: folders of frames and video files, decoded once into a frame cache.

A source is either a folder of frames (``<root>/<video>/<frame>.{jpg,png,tif}``, natural sort) or a
video file (mp4/avi/mkv/mov). Each video is decoded and resized once to the model resolution and
stored as a ``(N, H, W, C)`` uint8 ``.npy`` file in the cache; later epochs memory-map it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model import durable
from model.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v")
MIN_FRAMES = 7  # a sample at the default gap reads frames t-3 .. t+3 (longer gaps clamp at the edges)


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class VideoSource:
    """One video: a frame folder (``frames`` lists its files in order) or a video file."""

    name: str
    path: Path
    frames: tuple[Path, ...] = ()  # empty for a video file

    @property
    def is_file(self) -> bool:
        return not self.frames

    def fingerprint(self) -> str:
        """Changes whenever the source's files change (path, size, modification time)."""
        h = hashlib.sha1()
        for f in self.frames or (self.path,):
            st = f.stat()
            h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def discover(path: str | os.PathLike[str]) -> list[VideoSource]:
    """The videos under ``path``: a video file, a folder of frames, or a folder of those.

    Raises:
        DataError: the path is missing or holds no frames and no videos.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() not in VIDEO_SUFFIXES:
            raise DataError(f"{root}: not a video file (expected one of {', '.join(VIDEO_SUFFIXES)})")
        return [VideoSource(root.stem, root)]
    own_frames = image_files(root)
    if own_frames:
        return [VideoSource(root.name, root, tuple(own_frames))]
    sources: list[VideoSource] = []
    empty: list[str] = []
    for child in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if child.is_dir():
            frames = image_files(child)
            if frames:
                sources.append(VideoSource(child.name, child, tuple(frames)))
            else:
                empty.append(child.name)
        elif child.suffix.lower() in VIDEO_SUFFIXES:
            sources.append(VideoSource(child.stem, child))
    if not sources:
        detail = f" (empty sub-folders: {', '.join(empty)})" if empty else ""
        raise DataError(
            f"{root}: no frames and no videos found{detail}; expected <root>/<video>/<frame>.jpg|png|tif "
            f"or video files ({', '.join(VIDEO_SUFFIXES)})"
        )
    if empty:
        log.warning("%s: skipping sub-folders without frames: %s", root, ", ".join(empty))
    return sources


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A decoded image of any bit depth -> uint8 by one fixed mapping: 16-bit full range to 8-bit
    (x / 257, rounded), floating point as 0..1. Fixed, not stretched to each image's own
    maximum: a camera's frames must keep one brightness scale, or a bright object entering the scene
    would darken everything else and look like an anomaly.

    Raises:
        DataError: another pixel type (signed integers, 32-bit integers), or floats outside 0..1.
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        low, high = float(np.nanmin(image)), float(np.nanmax(image))
        if low < -1e-3 or high > 1 + 1e-3:  # another convention (0..255?): refused, not guessed per frame
            raise DataError(f"floating-point pixels must lie in 0..1, these span {low:g}..{high:g}; "
                            "save the frames as 8- or 16-bit images, or scale them to 0..1")
        return (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise DataError(f"pixel type {image.dtype} is not supported; use 8- or 16-bit images")


def to_model_frame(image: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """A decoded BGR (or grayscale) image -> (H, W, C) uint8 RGB or gray at model size (H, W)."""
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 2 or image.shape[2] == 1:
        gray = image.reshape(image.shape[0], image.shape[1])
        image = gray if channels == 1 else cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB)
    h, w = size
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return image.reshape(h, w, channels)


def declared_fps(cap: cv2.VideoCapture) -> float | None:
    """The frame rate an opened video or stream declares (container or SDP), or None when it does not
    say or says something no camera sends."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if 0 < fps < 1000 else None


def read_frames(source: VideoSource) -> Iterator[np.ndarray]:
    """Decoded frames of a source, in order, as OpenCV gives them (BGR or gray, native size).

    Raises:
        DataError: an unreadable image, an unopenable/corrupt video, or mixed frame sizes.
    """
    first_shape: tuple[int, ...] | None = None
    if source.is_file:
        cap = cv2.VideoCapture(str(source.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise DataError(f"{source.path}: cannot open video (corrupt file or unsupported codec)")
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield frame
        finally:
            cap.release()
        return
    for f in source.frames:
        image = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if image is None or image.size == 0:
            raise DataError(f"{f}: unreadable image (corrupt file or unsupported format)")
        try:
            image = to_uint8(image)  # 16-bit TIFFs and PNGs, float TIFFs
        except DataError as e:
            raise DataError(f"{f}: {e}") from None
        if first_shape is None:
            first_shape = image.shape[:2]
        elif image.shape[:2] != first_shape:
            raise DataError(
                f"{f}: frame size {image.shape[1]}x{image.shape[0]} differs from the video's first frame "
                f"{first_shape[1]}x{first_shape[0]} ({source.path}); every frame of a video must have one size"
            )
        yield image


def decode(source: VideoSource, size: tuple[int, int], channels: int) -> np.ndarray:
    """All frames of a source at model size: (N, H, W, C) uint8. Raises DataError when too short."""
    frames = [to_model_frame(f, size, channels) for f in read_frames(source)]
    if len(frames) < MIN_FRAMES:
        what = "decodable frames (corrupt or truncated video?)" if source.is_file and not frames else "frames"
        raise DataError(f"{source.path}: {len(frames)} {what}; a video needs at least {MIN_FRAMES}")
    return np.stack(frames)


class FrameCache:
    """Decoded videos on disk as ``.npy`` files keyed by source fingerprint, size and channels."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, source: VideoSource, size: tuple[int, int], channels: int) -> Path:
        key = hashlib.sha1(f"{source.fingerprint()}|{size}|{channels}".encode()).hexdigest()[:16]
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", source.name)
        return self.root / f"{safe}-{size[0]}x{size[1]}x{channels}-{key}.npy"

    def load(self, source: VideoSource, size: tuple[int, int], channels: int) -> np.ndarray:
        """(N, H, W, C) uint8 frames, memory-mapped; decoded and stored on first use."""
        path = self.path_for(source, size, channels)
        if not path.exists():
            frames = decode(source, size, channels)
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, frames)
            durable.replace((tmp, path))  # a crash or power cut never leaves a half-written entry to load
            log.debug("cached %s (%d frames) -> %s", source.path, len(frames), path)
        return np.load(path, mmap_mode="r")


def default_cache_dir() -> Path:
    return Path(os.environ.get("AEDMAE_CACHE_DIR", Path.home() / ".cache" / "aedmae" / "frames"))
