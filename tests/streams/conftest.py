"""A real RTSP server (GStreamer, run by the system python) on 127.0.0.1, serving real footage."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, free_port

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def _have_gst_rtsp() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def footage_mp4(tmp_path_factory) -> Path:
    real = SHARED_DATA / "footage" / "avenue_train_11.mp4"
    if real.exists():
        return real
    gst = shutil.which("gst-launch-1.0")
    if gst is None:
        pytest.skip("no ../shared footage and no gst-launch-1.0 to make a clip (scripts/setup.sh installs it)")
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"  # 40 s of test pattern, H.264
    pipeline = ["videotestsrc", "num-buffers=1000", "!", "video/x-raw,width=320,height=240,framerate=25/1", "!",
                "x264enc", "!", "h264parse", "!", "mp4mux", "!", "filesink", f"location={out}"]
    subprocess.run([gst, "-q", *pipeline], check=True)
    return out


class RtspServer:
    def __init__(self, footage: Path) -> None:
        self.footage = footage
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> RtspServer:
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(self.port), str(self.footage)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def rtsp_server(footage_mp4):
    if not _have_gst_rtsp():
        if os.environ.get("CI"):
            pytest.fail("GStreamer's RTSP server is missing: scripts/setup.sh installs it")
        pytest.skip("GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0) not installed here")
    server = RtspServer(footage_mp4).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def stream_server(tiny_checkpoint):
    """A live aedmae server (tiny model) for camera tests."""
    from tests.service.conftest import live_server

    with live_server(model=tiny_checkpoint, max_batch_size=8, max_batch_delay_ms=5) as s:
        yield s
