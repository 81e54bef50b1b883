"""API key, and a model that cannot load: the process stays up and says why."""

import shutil
import time

import httpx

from service.settings import Settings
from tests.service.conftest import LiveServer, live_server


def test_api_key_protects_v1(tiny_checkpoint):
    with live_server(model=tiny_checkpoint, api_key="s3cret") as s:
        body = {"files": [("frames", ("a.png", b"\x89PNG\r\n\x1a\n", "image/png"))]}
        r = httpx.post(s.url + "/v1/score", **body)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = httpx.post(s.url + "/v1/score", headers={"x-api-key": "wrong"}, **body)
        assert r.status_code == 401
        r = httpx.post(s.url + "/v1/score", headers={"x-api-key": "s3cret"}, **body)
        assert r.status_code == 400, "authorised: now the (broken) image itself is the problem"
        assert httpx.get(s.url + "/healthz").status_code == 200 and httpx.get(s.url + "/metrics").status_code == 200
        assert "s3cret" not in httpx.get(s.url + "/v1/model").text


def test_corrupt_model_keeps_process_up_and_not_ready(tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    server = LiveServer(Settings(model=broken))
    server.thread.start()
    try:
        end = time.monotonic() + 30
        while not (server.server.started and server.server.servers) and time.monotonic() < end:
            time.sleep(0.05)
        while server.app.state.startup_error is None and time.monotonic() < end:
            time.sleep(0.05)
        assert httpx.get(server.url + "/healthz").status_code == 200
        r = httpx.get(server.url + "/readyz")
        assert r.status_code == 503 and "does not match its sidecar" in r.text
        r = httpx.post(server.url + "/v1/score", content=b"x", headers={"content-type": "application/x-npy"})
        assert r.status_code == 503 and r.json()["error"] == "not_ready"
        r = httpx.get(server.url + "/v1/streams")  # the camera routes say the same
        assert r.status_code == 503 and "does not match its sidecar" in r.json()["detail"]
    finally:
        server.stop()
