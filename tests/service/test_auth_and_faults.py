"""API key, and a model that cannot load: the process stays up and says why."""

import shutil
import time

import httpx
import pytest

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


def test_bodies_in_flight_are_bounded_all_requests_together(tiny_checkpoint):
    """One upload of 1.5 MB is still arriving (a slow client); a second request of 1 MB would take the
    bodies held at once past max_inflight_bytes (2 MiB): it is refused at once (429, Retry-After,
    counted), not buffered. Once the first has been received and answered, the budget is free again."""
    import socket
    from urllib.parse import urlparse

    from tests.conftest import npy_body, scene_frames

    with live_server(model=tiny_checkpoint, max_request_bytes=2 << 20, max_inflight_bytes=2 << 20) as server:
        host, port = urlparse(server.url).hostname, urlparse(server.url).port
        slow_body = b"x" * 1_500_000
        slow = socket.create_connection((host, port))
        slow.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(slow_body) + slow_body[:1000])
        budget = server.app.state.body_budget
        end = time.monotonic() + 10
        while budget.held == 0 and time.monotonic() < end:  # the server has begun to read it
            time.sleep(0.02)
        assert budget.held == len(slow_body)
        frames = scene_frames(200, 48, 64, channels=3)  # 1.8 MB of npy
        body = npy_body(frames)
        r = httpx.post(server.url + "/v1/score", content=body, headers={"content-type": "application/x-npy"})
        assert r.status_code == 429 and r.json()["error"] == "overloaded" and r.headers["retry-after"] == "1"
        assert "max_inflight_bytes" in r.json()["detail"]
        slow.sendall(slow_body[1000:])  # not a valid .npy: the slow request ends in 400
        assert slow.recv(65536).startswith(b"HTTP/1.1 400 ")
        slow.close()
        end = time.monotonic() + 10
        while budget.held and time.monotonic() < end:
            time.sleep(0.02)
        assert budget.held == 0
        r = httpx.post(server.url + "/v1/score", content=body, headers={"content-type": "application/x-npy"})
        assert r.status_code == 200 and len(r.json()["frames"]) == 200
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))  # no Content-Length: counted as it comes
        r = httpx.post(server.url + "/v1/score", content=chunks, headers={"content-type": "application/x-npy"})
        assert r.status_code == 200 and len(r.json()["frames"]) == 200 and budget.held == 0
        metrics = httpx.get(server.url + "/metrics").text
        assert 'aedmae_requests_rejected_total{reason="inflight_bytes"} 1.0' in metrics


def test_a_stalled_upload_times_out_and_gives_its_bytes_back(tiny_checkpoint):
    """A client declares 1.5 MB, sends 1 kB and stalls: after body_timeout_s it gets 408 (JSON error),
    and the bytes it reserved are free for others."""
    import socket
    from urllib.parse import urlparse

    with live_server(model=tiny_checkpoint, body_timeout_s=1.0) as server:
        url = urlparse(server.url)
        slow = socket.create_connection((url.hostname, url.port))
        slow.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                     b"Content-Length: 1500000\r\n\r\n" + b"x" * 1000)
        slow.settimeout(10)
        t0 = time.monotonic()
        answer = slow.recv(65536)
        waited = time.monotonic() - t0
        while b"}" not in answer and (more := slow.recv(65536)):  # the JSON body may come in a second packet
            answer += more
        slow.close()
        assert answer.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in answer, answer[:300]
        assert 0.5 < waited < 5, waited
        assert server.app.state.body_budget.held == 0


def test_frames_of_a_client_that_hung_up_leave_the_queue_unrun(tiny_checkpoint):
    """Request A holds the only worker (its backend is held); request B queues behind it, and its client
    gives up (its own 1 s timeout) and closes the connection. B's frames are cancelled: they make room
    in the full queue for request C's, once A's batch is released the backend never runs them, and the
    hang-up is counted."""
    import threading

    from tests.conftest import scene_frames
    from tests.service.test_api import jpegs

    with live_server(model=tiny_checkpoint, max_batch_delay_ms=1, queue_capacity=5) as server:
        backend = server.runtime.backends[0]
        original, gate, batches = backend.infer, threading.Event(), []

        def held(frames):
            batches.append(len(frames))
            gate.wait(20)
            return original(frames)

        backend.infer = held
        try:
            first: list[int] = []
            a = threading.Thread(target=lambda: first.append(httpx.post(
                server.url + "/v1/score", files=jpegs(scene_frames(2, 48, 72)), timeout=30).status_code))
            a.start()
            end = time.monotonic() + 10
            while not batches and time.monotonic() < end:
                time.sleep(0.02)
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(server.url + "/v1/score", files=jpegs(scene_frames(5, 48, 72)), timeout=1.0)
            end = time.monotonic() + 10
            while "client_closed\"} 1.0" not in httpx.get(server.url + "/metrics").text and time.monotonic() < end:
                time.sleep(0.05)
            third: list[int] = []  # B's cancelled frames still fill the queue: C's five must take their place
            c = threading.Thread(target=lambda: third.append(httpx.post(
                server.url + "/v1/score", files=jpegs(scene_frames(5, 48, 72)), timeout=30).status_code))
            c.start()
            end = time.monotonic() + 10
            batcher = server.runtime.batcher  # until C's frames are queued (or C is refused)
            while (sum(not j.future.cancelled() for j in list(batcher._queue)) < 5 and not third
                   and time.monotonic() < end):
                time.sleep(0.02)
        finally:
            gate.set()
        a.join(30)
        c.join(30)
        backend.infer = original
        assert first == [200] and third == [200], (first, third)
        assert batches[0] == 2 and sum(batches) == 7, batches  # B's five frames never ran; C's did
        assert 'aedmae_requests_rejected_total{reason="client_closed"} 1.0' in httpx.get(server.url + "/metrics").text
