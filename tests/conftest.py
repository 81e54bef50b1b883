"""Shared fixtures: tiny configs and generated footage (a static textured scene with moving blobs)."""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class QuietHandler(BaseHTTPRequestHandler):
    """A test receiver's request handler, without a line on stderr for every request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def http_server(handler: Callable[..., BaseHTTPRequestHandler],
                tls: ssl.SSLContext | None = None) -> Iterator[ThreadingHTTPServer]:
    """A threaded HTTP server on 127.0.0.1 (a free port: ``.server_port``) answering with ``handler``,
    over TLS with ``tls``; shut down and closed on exit, so its port refuses connections afterwards."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def wait_until_ready(url: str, proc: subprocess.Popen, seconds: float = 90,
                     verify: ssl.SSLContext | bool = True) -> None:
    """Poll ``url`` (over HTTPS trusting ``verify``) until it answers 200 while ``proc`` keeps running;
    fail with its output otherwise."""
    import httpx

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            output = "".join(o for o in proc.communicate() if o)
            raise AssertionError(f"{proc.args} exited early: {output[-3000:]}")
        try:
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready within {seconds} s")


def wait_for(predicate, seconds: float, every: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``seconds`` pass (False)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def series(text: str, name: str, **labels: Any) -> float | None:
    """The value of one series in Prometheus exposition ``text`` (a /metrics body, a registry's
    generate_latest), or None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            sample, value = line.rsplit(" ", 1)
            got = ",".join(sorted(sample[sample.find("{") + 1 : -1].split(","))) if "{" in sample else ""
            if got == want:
                return float(value)
    return None


def camera(client, sid: str) -> dict:
    """A camera's description, GET /v1/streams/{sid}."""
    return client.get(f"/v1/streams/{sid}").json()


def record_disk_ops(monkeypatch) -> list[tuple[str, str]]:
    """Records every fsync (("sync", path)) and rename (("replace", target)) the code under test makes,
    still doing them, for `assert_durable`."""
    import os

    ops: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        ops.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        ops.append(("sync?", str(Path(src).resolve())))  # where src's sync has to be found before it
        ops.append(("replace", str(Path(dst).resolve())))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return ops


def assert_durable(ops: list[tuple[str, str]], target: Path) -> None:
    """`target` was last written as model/durable.py promises: its new content synced before the
    rename over it, its folder synced after."""
    target = target.resolve()
    at = max(i for i, op in enumerate(ops) if op == ("replace", str(target)))
    src = ops[at - 1][1]
    assert ("sync", src) in ops[:at - 1], f"{target.name}: renamed into place without syncing {src}"
    assert ("sync", str(target.parent)) in ops[at + 1:], f"{target.name}: its folder was not synced after"


def npy_body(frames: np.ndarray) -> bytes:
    """An application/x-npy request body."""
    buf = io.BytesIO()
    np.save(buf, frames)
    return buf.getvalue()


def require_shared(*parts: str) -> Path:
    """The path under ../shared/data, or skip the test with a message naming it."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder beside the project); not present here")
    return path


def scene_frames(n: int, height: int = 48, width: int = 72, seed: int = 0, channels: int = 3) -> np.ndarray:
    """(n, H, W, C) uint8: a fixed textured background with two blobs walking across it."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(60, 200, (height, width, channels)).astype(np.uint8), (5, 5), 0)
    background = background.reshape(height, width, channels)
    frames = []
    for t in range(n):
        f = background.copy()
        for k, (y, speed) in enumerate(((height // 3, 2), (2 * height // 3, -1))):
            x = int((10 + k * 30 + speed * t) % width)
            cv2.circle(f, (x, y), 4, (30,) * channels, -1)
        frames.append(f.reshape(height, width, channels))
    return np.stack(frames)


def write_frame_folder(root: Path, name: str, frames: np.ndarray, ext: str = ".png") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        image = f if f.shape[2] == 1 else cv2.cvtColor(f, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"{i}{ext}"), image)
    return folder


def avenue_clip(path: Path, frames: int) -> Path:
    """The first ``frames`` frames of a real Avenue video (a scene the shipped Ped2 model never saw), as an
    mp4 at 320x180; skips without ../shared/data."""
    out = [cv2.cvtColor(cv2.resize(f, (320, 180)), cv2.COLOR_BGR2RGB)
           for f in video_frames(require_shared("footage", "avenue_train_11.mp4"), frames)]
    return write_video(path, np.stack(out))


def video_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """The first ``limit`` frames of a video file (all by default), decoded as the product decodes
    them (model.frames.read_frames: BGR, native size)."""
    from model.frames import VideoSource, read_frames

    return list(islice(read_frames(VideoSource(path.stem, path)), limit))


def write_video(path: Path, frames: np.ndarray, fps: int = 25, fourcc: str = "mp4v") -> Path:
    """An RGB clip as a video file; fourcc "MJPG" (in .avi) codes every frame on its own, so a clip's
    frames decode the same alone as spliced into a longer file."""
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture
def footage(tmp_path: Path) -> Path:
    """A training root with two frame-folder videos of 24 frames each."""
    root = tmp_path / "train"
    write_frame_folder(root, "01", scene_frames(24, seed=1))
    write_frame_folder(root, "02", scene_frames(24, seed=2))
    return root


@pytest.fixture
def labelled_test_set(tmp_path: Path) -> Path:
    """A test set in the ../shared/data/ped2 layout: video "a" normal (12 frames); video "b" normal
    walking, then a bright square in its second half (frames 8-15 labelled 1)."""
    root = tmp_path / "test"
    write_frame_folder(root / "test", "a", scene_frames(12, seed=1))
    frames = scene_frames(16, seed=2)
    frames[8:, 10:30, 20:40] = 255
    write_frame_folder(root / "test", "b", frames)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0\n" * 12)
    (root / "labels" / "b.txt").write_text("0\n" * 8 + "1\n" * 8)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny seeded model with token statistics and calibration fitted on generated footage, and its
    ONNX export beside it (model.onnx + model.onnx.json): a complete model folder, as shipped."""
    import torch

    from export.onnx_export import export_onnx
    from model import checkpoint
    from model.config import preset
    from model.evaluation import fit_scorer
    from model.network import AEDMAE

    torch.manual_seed(0)
    cfg = preset("tiny")[0]
    net = AEDMAE(cfg).eval()
    clips = [(f"v{i}", scene_frames(20, *cfg.image_size, seed=i)) for i in range(2)]
    _, meta = fit_scorer(net, clips)
    folder = checkpoint.save(net, tmp_path_factory.mktemp("ckpt"), **meta)
    export_onnx(folder, folder / "model.onnx")
    return folder


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint):
    return tiny_checkpoint / "model.onnx"


def tiny_train(tiny, **train):
    """The tiny preset's model and training configs, the training one with ``train`` fields replaced."""
    import dataclasses

    return tiny[0], dataclasses.replace(tiny[1], **train)


def frames_batch(n, cfg, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, *cfg.image_size, cfg.channels), dtype=np.uint8)


@pytest.fixture
def tiny():
    from model.config import preset

    return preset("tiny")
