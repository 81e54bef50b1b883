"""`aedmae serve` out of the box: the shipped model, a real process, real frames over HTTP."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import httpx
import pytest

from model.shipped import SHIPPED_DIR
from tests.conftest import SHARED_DATA, free_port, scene_frames, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]


def _real_frames() -> list[bytes]:
    folder = SHARED_DATA / "ped2" / "test" / "01"
    if folder.is_dir():  # real footage when ../shared is present
        return [(folder / f"{i:03d}.jpg").read_bytes() for i in range(100, 106)]
    return [cv2.imencode(".jpg", f)[1].tobytes() for f in scene_frames(6, 240, 360)]


@pytest.mark.slow
def test_serve_shipped_model_out_of_the_box():
    """The README's main command as written, on a free port: `scripts/run.sh serve` (set-up, done here, then
    `aedmae serve`), in the environment this test runs in."""
    assert (SHIPPED_DIR / "model.onnx").is_file(), "the shipped model is part of the repository"
    port = free_port()
    env = {**os.environ, "AEDMAE_VENV": sys.prefix}
    proc = subprocess.Popen(["bash", "scripts/run.sh", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url + "/readyz", proc, 120)
        files = [("frames", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(_real_frames())]
        r = httpx.post(url + "/v1/score?heatmap=png", files=files, timeout=60)
        assert r.status_code == 200, r.text
        frames = r.json()["frames"]
        assert len(frames) == 6 and all(0 <= f["calibrated"] <= 1 and f["heatmap"] for f in frames)
        info = httpx.get(url + "/v1/model").json()
        assert info["backend"] == "onnxruntime" and info["calibration"]["threshold"] > 0
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "backend onnxruntime" in out and "ready" in out  # startup logs backend, model, shapes, profile


def test_serving_path_imports_no_torch(tiny_checkpoint):
    code = (
        "import sys, time\n"
        "from service.app import create_app\n"
        "from service.runtime import ScoringRuntime\n"
        "from service.metrics import Metrics\n"
        "from service.settings import Settings\n"
        f"rt = ScoringRuntime(Settings(model={str(tiny_checkpoint)!r}), Metrics())\n"
        "rt.start()\n"
        "assert rt.ready, rt.readiness\n"
        "create_app(Settings())\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", "serving an ONNX model must not import torch"
