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


def test_a_request_past_its_deadline_is_504_and_the_next_one_is_served(tiny_checkpoint):
    """Frames stuck behind a slow batch: the request ends in 504 with the JSON error body (the deadline
    counted as a rejection), and once the backend is back the next request is scored."""
    import threading

    from tests.conftest import scene_frames
    from tests.service.test_api import jpegs

    with live_server(model=tiny_checkpoint, request_timeout_s=0.3) as server:
        backend = server.runtime.backends[0]
        original, gate = backend.infer, threading.Event()

        def stuck(frames):
            gate.wait(10)
            return original(frames)

        backend.infer = stuck
        try:
            r = httpx.post(server.url + "/v1/score", files=jpegs(scene_frames(2, 48, 72)), timeout=10)
            assert r.status_code == 504 and r.json()["error"] == "deadline_exceeded", r.text
        finally:
            gate.set()
            backend.infer = original
        r = httpx.post(server.url + "/v1/score", files=jpegs(scene_frames(2, 48, 72)), timeout=10)
        assert r.status_code == 200 and len(r.json()["frames"]) == 2
        assert 'aedmae_requests_rejected_total{reason="deadline"} 1.0' in httpx.get(server.url + "/metrics").text


def test_a_dead_inference_worker_fails_healthz_and_readyz_while_the_others_serve(tiny_checkpoint, caplog):
    """A fault outside the per-batch guard ends a worker's thread: the process cannot heal that, so
    /healthz (the container's health check) and /readyz say so, and the other worker keeps scoring."""
    import threading

    from tests.conftest import npy_body, scene_frames

    with live_server(model=tiny_checkpoint, workers=2) as server:
        batcher, fired = server.runtime.batcher, threading.Event()
        original = batcher._collect

        def collect():
            if not fired.is_set():
                fired.set()
                raise RuntimeError("injected worker fault")
            return original()

        batcher._collect = collect
        body = npy_body(scene_frames(4, 48, 64, channels=3))
        headers = {"content-type": "application/x-npy"}
        assert httpx.post(server.url + "/v1/score", content=body, headers=headers).status_code == 200
        end = time.monotonic() + 10
        while batcher.dead_workers() == 0 and time.monotonic() < end:
            time.sleep(0.05)
        r = httpx.get(server.url + "/healthz")
        assert r.status_code == 503 and "1 of 2 inference workers have stopped" in r.json()["detail"], r.text
        r = httpx.get(server.url + "/readyz")
        assert r.status_code == 503 and "1 inference worker(s) stopped" in r.text, r.text
        assert httpx.post(server.url + "/v1/score", content=body, headers=headers).status_code == 200
        assert "aedmae_inference_workers_stopped 1.0" in httpx.get(server.url + "/metrics").text
    assert "injected worker fault" in caplog.text
