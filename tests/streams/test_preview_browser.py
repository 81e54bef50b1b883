"""The live preview as an operator sees it: headless Chromium opens a page embedding the MJPEG
stream, and the screenshot shows a real frame where the <img> is."""

import os
import shutil
import subprocess

import cv2
import httpx
import numpy as np
import pytest

from service.stream_routes import BOUNDARY
from tests.conftest import wait_for
from tests.service.conftest import live_server


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/setup.sh installs it")
        pytest.skip("chromium is not installed here (scripts/setup.sh installs it as root)")
    return path


def first_part(client, url):
    """The first JPEG of a multipart/x-mixed-replace stream."""
    with client.stream("GET", url) as r:
        assert r.headers["content-type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        data = b""
        for chunk in r.iter_bytes():
            data += chunk
            start, end = data.find(b"\xff\xd8"), data.find(b"\xff\xd9")
            if start >= 0 and end > start:
                return data[start : end + 2]
    raise AssertionError("the stream ended before a whole frame")


def test_preview_shows_the_live_frame_in_a_browser(tiny_checkpoint, footage_mp4, tmp_path):
    browser = chromium()
    with live_server(model=tiny_checkpoint) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        body = {"id": "lobby", "url": str(footage_mp4), "realtime": True}
        assert c.post("/v1/streams", json=body).status_code == 201
        assert c.get("/v1/streams/nope/preview.mjpg").status_code == 404
        assert wait_for(lambda: c.get("/v1/streams/lobby").json()["frames"]["scored"] > 5, 30)
        jpeg = cv2.imdecode(np.frombuffer(first_part(c, "/v1/streams/lobby/preview.mjpg"), np.uint8), cv2.IMREAD_COLOR)
        assert jpeg.shape[1] == 640 and jpeg.std() > 10
        page = tmp_path / "preview.html"
        page.write_text(f"<html><body style='margin:0;background:#fff'>"
                        f"<img src='{srv.url}/v1/streams/lobby/preview.mjpg'></body></html>")
        shot = tmp_path / "shot.png"
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
               "--window-size=800,600", "--timeout=4000", page.as_uri()]
        subprocess.run(cmd, capture_output=True, timeout=60, check=True)
    image = cv2.imread(str(shot))
    assert image is not None, "no screenshot"
    painted = np.argwhere((image < 250).any(axis=2))  # everything that is not the white page
    height, width = painted.max(axis=0) - painted.min(axis=0) + 1
    assert width == 640 and height == jpeg.shape[0], (width, height)  # the frame, at its size
    frame = image[: jpeg.shape[0], :640]
    assert frame.std() > 10 and len(np.unique(frame.reshape(-1, 3), axis=0)) > 1000  # a picture, not a box
    assert (image[:, 700:] >= 250).all()  # and only the frame
