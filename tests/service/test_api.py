"""The HTTP API against a real uvicorn server and a real ONNX model (tiny)."""

from __future__ import annotations

import base64
import json

import cv2
import httpx
import numpy as np
import pytest

from model.regions import hot_regions
from tests.conftest import npy_body as npy
from tests.conftest import scene_frames, series


def jpegs(frames: np.ndarray) -> list[tuple[str, tuple[str, bytes, str]]]:
    files = []
    for i, f in enumerate(frames):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        assert ok
        files.append(("frames", (f"{i}.jpg", buf.tobytes(), "image/jpeg")))
    return files


CLIP = scene_frames(14, 96, 144, seed=4)  # any size: the server resizes to the model's
NPY_HEADERS = {"content-type": "application/x-npy"}


def test_health_ready_model(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "alive"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["ready"] and ready["golden_parity"]["ok"] and ready["warmup_batch_sizes"] == [1, 2, 4, 8]
    rates = ready["startup_frames_per_second"]  # the golden clip's 12 frames in batches of the max, 8
    assert rates["frames"] == 12 and rates["batch"] == 8 and len(rates["per_worker"]) == 1, rates
    assert rates["per_worker"][0] > 0, rates
    info = httpx.get(server.url + "/v1/model").json()
    assert info["backend"] == "onnxruntime" and info["resolution"] == [32, 48] and info["lookahead_frames"] == 3
    assert info["calibration"]["threshold"] > 0
    assert "/v1/score" in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_score_jpeg_frames(server):
    r = httpx.post(server.url + "/v1/score?heatmap=grid", files=jpegs(CLIP[:6]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [f["index"] for f in body["frames"]] == list(range(6)) and body["lookahead_frames"] == 3
    f = body["frames"][0]
    assert f["score"] > 0 and 0 <= f["calibrated"] <= 1 and f["is_anomaly"] == (f["calibrated"] >= 0.5)
    assert np.array(f["heatmap"]).shape == (4, 6)
    assert f["score"] == pytest.approx(f["teacher_error"] + f["discrepancy"], rel=1e-5)


def test_npy_equals_png_and_is_deterministic(server):
    a = httpx.post(server.url + "/v1/score", content=npy(CLIP[:5]), headers=NPY_HEADERS)
    b = httpx.post(server.url + "/v1/score", content=npy(CLIP[:5]), headers=NPY_HEADERS)
    assert a.status_code == 200 and a.json()["frames"] == b.json()["frames"]
    files = []
    for i, f in enumerate(CLIP[:5]):  # PNG is lossless: same pixels as the npy body
        files.append(("frames", (f"{i}.png", cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes(),
                                 "image/png")))
    c = httpx.post(server.url + "/v1/score", files=files)
    assert [x["score"] for x in c.json()["frames"]] == pytest.approx([x["score"] for x in a.json()["frames"]],
                                                                      rel=1e-6)


def test_png_heatmap(server):
    r = httpx.post(server.url + "/v1/score?heatmap=png", files=jpegs(CLIP[:2]))
    png = base64.b64decode(r.json()["frames"][0]["heatmap"])
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape == (4, 6) and image.dtype == np.uint8


def test_boxes_are_the_hottest_regions_of_the_grid(server):
    body = npy(CLIP[:5])
    grid = httpx.post(server.url + "/v1/score?heatmap=grid", content=body, headers=NPY_HEADERS).json()["frames"]
    assert all(round(v, 6) == v for g in grid for row in g["heatmap"] for v in row)  # 6 decimals: no noise digits
    for k in (2, 16):
        r = httpx.post(server.url + f"/v1/score?heatmap=boxes&top_k={k}", content=body, headers=NPY_HEADERS)
        assert r.status_code == 200, r.text
        for g, b in zip(grid, r.json()["frames"], strict=True):
            assert b["heatmap"] is None and g["boxes"] is None
            want = hot_regions(np.array(g["heatmap"]), k)
            assert 1 <= len(b["boxes"]) == len(want) <= k
            for got, region in zip(b["boxes"], want, strict=True):
                assert got["box"] == pytest.approx(region.box) and got["tokens"] == region.tokens
                assert got["peak"] == pytest.approx(region.peak, rel=1e-5)
                assert got["share"] == pytest.approx(region.share)
    # this clip's frames have one hot region each; a frame with three shows top_k is what limits them
    from service.routes import _frame_score
    from service.runtime import FrameResult

    three = np.zeros((4, 6), np.float32)
    three[0, 0], three[0, 5], three[3, 2] = 1.0, 0.9, 0.8
    result = FrameResult(0, {"heatmap": three, "calibrated": 0.2, "score": 1.0, "teacher_error": 0.6,
                             "discrepancy": 0.4})
    assert [len(_frame_score(result, "boxes", 1.0, k, False).boxes or []) for k in (1, 2, 3, 16)] == [1, 2, 3, 3]
    at_line = [FrameResult(0, result.outputs | {"calibrated": c}) for c in (0.4999, 0.5)]  # 0.5 alerts, as documented
    assert [_frame_score(r, "none", 1.0, 1, False).is_anomaly for r in at_line] == [False, True]
    for bad in ("top_k=0", "top_k=17", "top_k=two"):
        r = httpx.post(server.url + f"/v1/score?heatmap=boxes&{bad}", content=body, headers=NPY_HEADERS)
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", bad


def test_chunked_stream_equals_one_request(server):
    whole = httpx.post(server.url + "/v1/score", content=npy(CLIP), headers=NPY_HEADERS)
    expected = [f["score"] for f in whole.json()["frames"]]
    got = {}
    chunks = [CLIP[0:5], CLIP[5:6], CLIP[6:11], CLIP[11:14]]
    for k, chunk in enumerate(chunks):
        last = k == len(chunks) - 1
        r = httpx.post(server.url + f"/v1/score?stream_id=cam-7{'&flush=true' if last else ''}", content=npy(chunk),
                       headers=NPY_HEADERS)
        assert r.status_code == 200, r.text
        got.update({f["index"]: f["score"] for f in r.json()["frames"]})
        if k == 0:
            assert sorted(got) == [0, 1] and r.json()["pending_frames"] == 3
    assert [got[i] for i in range(len(CLIP))] == pytest.approx(expected, rel=1e-6)
    alerting = sum(f["is_anomaly"] for f in whole.json()["frames"])  # the scene check's tally, over the stream
    assert whole.json()["scene"] is None and r.json()["scene"] == {
        "frames": len(CLIP), "alert_share": round(alerting / len(CLIP), 4), "warning": None}  # < 100 frames
    assert httpx.delete(server.url + "/v1/score/streams/cam-7").status_code == 404  # flushed contexts end


def test_a_failed_chunk_sent_again_scores_as_if_it_never_failed(server):
    """A stream_id request that fails after its frames entered the context (here a failed batch; a 429,
    a deadline or a client hanging up go the same way) leaves the context as it was: the client sends the
    same chunk again, the flush included, and gets the scores of one request."""
    whole = httpx.post(server.url + "/v1/score", content=npy(CLIP), headers=NPY_HEADERS).json()["frames"]
    backend = server.runtime.backends[0]
    original = backend.infer

    def fail_once(frames):
        backend.infer = original
        raise RuntimeError("injected fault")

    got = {}
    try:
        for chunk, query in ((CLIP[0:5], ""), (CLIP[5:11], ""), (CLIP[11:14], "&flush=true")):
            backend.infer = fail_once
            url = server.url + f"/v1/score?stream_id=cam-retry{query}"
            r = httpx.post(url, content=npy(chunk), headers=NPY_HEADERS)
            assert r.status_code == 500 and r.json()["error"] == "inference_failed"
            r = httpx.post(url, content=npy(chunk), headers=NPY_HEADERS)
            assert r.status_code == 200, r.text
            got.update({f["index"]: f["score"] for f in r.json()["frames"]})
    finally:
        backend.infer = original
    assert sorted(got) == list(range(len(CLIP)))
    assert [got[i] for i in range(len(CLIP))] == pytest.approx([f["score"] for f in whole], rel=1e-6)
    assert r.json()["scene"]["frames"] == len(CLIP)  # failed attempts are not counted


def test_offsets_catch_a_chunk_sent_twice_and_a_lost_context(server):

    def send(chunk, query):
        url = server.url + f"/v1/score?stream_id=cam-offset&{query}"
        return httpx.post(url, content=npy(chunk), headers=NPY_HEADERS)

    r = send(CLIP[0:5], "offset=0")
    assert r.status_code == 200 and r.json()["next_offset"] == 5
    r = send(CLIP[0:5], "offset=0")  # the answer was lost, the client sends it again
    assert r.status_code == 409 and r.json()["error"] == "offset_mismatch" and r.headers["X-Stream-Offset"] == "5"
    r = send(CLIP[5:14], "offset=5&flush=true")
    assert r.status_code == 200 and r.json()["frames"][0]["index"] == 2 and r.json()["next_offset"] == 0
    r = send(CLIP[0:5], "offset=14")  # the flushed (or expired) context is gone: said, not scored from 0
    assert r.status_code == 409 and "new context" in r.json()["detail"]
    r = httpx.post(server.url + "/v1/score?offset=0", content=npy(CLIP[:2]), headers=NPY_HEADERS)
    assert r.status_code == 400 and "needs a stream_id" in r.json()["detail"]


def test_an_empty_flush_ends_a_clip_whose_last_chunk_has_gone(server):
    """A live client learns that its clip ended after sending the last frames: an empty body with
    flush=true scores the frames still waiting for their look-ahead, as one request would have."""
    whole = httpx.post(server.url + "/v1/score", content=npy(CLIP), headers=NPY_HEADERS).json()["frames"]
    r = httpx.post(server.url + "/v1/score?stream_id=cam-end", content=npy(CLIP), headers=NPY_HEADERS)
    assert r.json()["pending_frames"] == 3
    got = {f["index"]: f["score"] for f in r.json()["frames"]}
    r = httpx.post(server.url + "/v1/score?stream_id=cam-end&flush=true&offset=14")
    assert r.status_code == 200 and [f["index"] for f in r.json()["frames"]] == [11, 12, 13], r.text
    got |= {f["index"]: f["score"] for f in r.json()["frames"]}
    assert [got[i] for i in range(len(CLIP))] == pytest.approx([f["score"] for f in whole], rel=1e-6)
    assert httpx.post(server.url + "/v1/score").status_code == 415  # without flush, an empty body is no request


def test_scene_cut_in_a_request_or_a_stream_ends_the_clip_there(server):
    """Two scenes spliced (another camera's frames from index 10): in one request, and in chunks with a
    stream_id, each side scores as its own clip, and the first frame after the cut says so."""
    first, second = CLIP[:10], scene_frames(8, 96, 144, seed=9)
    second[:, :, 72:] += 50  # the other camera sees a bright wall (the generated textures alone are faint)

    def post(frames, query=""):
        r = httpx.post(server.url + "/v1/score" + query, content=npy(frames),
                       headers=NPY_HEADERS)
        assert r.status_code == 200, r.text
        return r.json()["frames"]

    parts = [f["score"] for f in post(first) + post(second)]
    spliced = post(np.concatenate([first, second]))
    assert [f["score"] for f in spliced] == pytest.approx(parts, rel=1e-6)
    assert [f["index"] for f in spliced if f["cut"]] == [10]
    spliced_clip = np.concatenate([first, second])
    got = post(spliced_clip[:12], "?stream_id=cut-1") + post(spliced_clip[12:], "?stream_id=cut-1&flush=true")
    assert [f["index"] for f in got] == list(range(18)) and [f["index"] for f in got if f["cut"]] == [10]
    assert [f["score"] for f in got] == pytest.approx(parts, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"files": [("frames", ("a.jpg", b"\xff\xd8\xff\xe0garbage", "image/jpeg"))]}, 400, "bad_request"),
        ({"files": [("frames", ("a.gif", b"GIF89a....", "image/gif"))]}, 415, "unsupported_media_type"),
        ({"files": [("other", ("a.jpg", b"x", "image/jpeg"))]}, 400, "bad_request"),
        ({"files": [("frames", ("a.jpg", b"\xff\xd8\xff", "image/jpeg"))], "data": {"frames": "text"}}, 400,
         "bad_request"),
        ({"content": b'--b\r\nContent-Disposition: form-data; name="frames"; filename="a.jpg"\r\n\r\n\xff\xd8',
          "headers": {"content-type": "multipart/form-data; boundary=b"}}, 400, "bad_request"),
        ({"content": b"", "headers": NPY_HEADERS}, 400, "bad_request"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"content": npy(np.zeros((0, 8, 8, 3), np.uint8)), "headers": NPY_HEADERS},
         400, "bad_request"),
        ({"content": npy(np.zeros((2, 8, 8), np.uint8)), "headers": NPY_HEADERS},
         400, "bad_request"),
        ({"content": npy(np.zeros((2, 8, 8, 3), np.float32)), "headers": NPY_HEADERS},
         400, "bad_request"),
        ({"content": npy(np.zeros((41, 8, 8, 3), np.uint8)), "headers": NPY_HEADERS},
         413, "payload_too_large"),
        ({"content": b"x" * (3 << 20), "headers": NPY_HEADERS}, 413, "payload_too_large"),
        ({"content": npy(np.zeros((1, 2048, 1024, 3), np.uint8)[:, :1100]),
          "headers": NPY_HEADERS}, 413, "payload_too_large"),
    ],
    ids=["corrupt-jpeg", "gif", "wrong-field", "text-frames", "truncated-multipart", "empty-npy",
         "wrong-content-type", "zero-frames", "wrong-ndim",
         "wrong-dtype", "too-many-frames", "too-many-bytes", "too-many-pixels"],
)
def test_bad_input_gives_4xx_json(server, kwargs, status, error):
    r = httpx.post(server.url + "/v1/score", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and r.json()["detail"]


def test_mixed_sizes_bad_query_unknown_stream(server):
    files = jpegs(CLIP[:1]) + jpegs(scene_frames(1, 40, 40))
    r = httpx.post(server.url + "/v1/score", files=files)
    assert r.status_code == 400 and "one size" in r.json()["detail"]
    r = httpx.post(server.url + "/v1/score?heatmap=banana", files=jpegs(CLIP[:1]))
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    (problem,) = r.json()["detail"]
    assert problem["loc"] == ["query", "heatmap"] and "'png'" in problem["msg"], problem
    r = httpx.post(server.url + "/v1/score?stream_id=bad%20id", files=jpegs(CLIP[:1]))
    assert r.status_code == 422
    r = httpx.post(server.url + "/v1/score?flush=true", files=jpegs(CLIP[:1]))
    assert r.status_code == 400
    assert httpx.delete(server.url + "/v1/score/streams/nobody").status_code == 404


def test_a_model_scored_with_a_longer_gap_looks_ahead_that_far(tiny_checkpoint, footage, tmp_path):
    """model.scoring.context_gap 4 (`aedmae calibrate --set`, then `export onnx`): the server reads it from
    the sidecar, says look-ahead 4, holds 4 frames of a stream back, chunks still equal one request, and
    the scores are PyTorch's over the (t-4, t, t+4) windows, not the (t-3, t, t+3) ones."""
    import torch

    from export.bundle import sidecar_path
    from model import checkpoint
    from model.evaluation import scorer_from_meta
    from model.scoring import score_frames
    from model.window import clip_windows
    from service.cli import main
    from service.decoding import rgb_to_frames
    from tests.service.conftest import live_server

    gap4 = tmp_path / "gap4"
    assert main(["calibrate", "--model", str(tiny_checkpoint), "--data", str(footage), "--out", str(gap4),
                 "--set", "model.scoring.context_gap=4", "--no-progress"]) == 0
    assert main(["export", "onnx", "--model", str(gap4), "--out", str(gap4 / "model.onnx")]) == 0
    io = json.loads(sidecar_path(gap4 / "model.onnx").read_text())["io"]  # the sidecar describes the window too
    assert io["lookahead_frames"] == 4 and io["input_layout"].startswith("frames t-4, t, t+4 ")
    with live_server(model=gap4, max_batch_size=8, max_batch_delay_ms=5) as s:
        assert httpx.get(s.url + "/v1/model").json()["lookahead_frames"] == 4
        whole = httpx.post(s.url + "/v1/score", content=npy(CLIP), headers=NPY_HEADERS).json()
        first = httpx.post(s.url + "/v1/score?stream_id=g4", content=npy(CLIP[:6]), headers=NPY_HEADERS).json()
        rest = httpx.post(s.url + "/v1/score?stream_id=g4&flush=true", content=npy(CLIP[6:]), headers=NPY_HEADERS)
    assert [f["index"] for f in first["frames"]] == [0, 1] and first["pending_frames"] == 4
    assert whole["lookahead_frames"] == first["lookahead_frames"] == 4
    scores = [f["score"] for f in whole["frames"]]
    assert [f["score"] for f in first["frames"] + rest.json()["frames"]] == pytest.approx(scores, rel=1e-6)
    net, meta = checkpoint.load(gap4)
    frames = rgb_to_frames(CLIP, net.cfg.image_size, net.cfg.channels)
    windows = {gap: torch.from_numpy(clip_windows(frames, np.arange(len(CLIP)), gap)) for gap in (3, 4)}
    scorer = scorer_from_meta(net, meta)
    with torch.no_grad():
        torch_scores = {g: score_frames(net.eval(), w, scorer).score.numpy() for g, w in windows.items()}
    assert scores == pytest.approx(torch_scores[4].tolist(), rel=1e-4)
    assert not np.allclose(torch_scores[3], torch_scores[4], rtol=1e-3), "the gap changes what the model sees"


def test_unknown_route_and_wrong_method_answer_in_the_same_error_shape(server):
    r = httpx.get(server.url + "/no/such/route")
    assert r.status_code == 404 and r.json() == {"error": "not_found", "detail": "Not Found"}
    r = httpx.get(server.url + "/v1/score")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"


def test_backend_exception_fails_that_batch_only(server):
    backend = server.runtime.backends[0]
    original = backend.infer
    calls = {"n": 0}

    def flaky(frames):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected fault")
        return original(frames)

    backend.infer = flaky
    try:
        r = httpx.post(server.url + "/v1/score", files=jpegs(CLIP[:1]))
        assert r.status_code == 500 and r.json()["error"] == "inference_failed"
        r = httpx.post(server.url + "/v1/score", files=jpegs(CLIP[:2]))
        assert r.status_code == 200
    finally:
        backend.infer = original


def test_metrics_after_traffic(server):
    httpx.post(server.url + "/v1/score", files=jpegs(CLIP[:4]))
    text = httpx.get(server.url + "/metrics").text
    for name in ('aedmae_http_requests_total{code="200",route="/v1/score"}', "aedmae_batch_size_bucket",
                 'aedmae_batches_total{trigger=', 'aedmae_inference_duration_seconds_count{backend="onnxruntime"}',
                 "aedmae_inference_frames_total", "aedmae_model_ready 1.0", "aedmae_queue_depth",
                 "aedmae_queue_wait_seconds_bucket", "aedmae_model_info{", "aedmae_build_info{",
                 'aedmae_anomaly_score_distribution_bucket{le="0.5",source="http"}', "aedmae_http_requests_in_flight",
                 "aedmae_anomaly_threshold 0.5", "aedmae_inference_workers 1.0",
                 "aedmae_inference_workers_stopped 0.0"):
        assert name in text, name
    frames = [line for line in text.splitlines() if line.startswith("aedmae_inference_frames_total ")]
    assert float(frames[0].split()[1]) >= 4


def test_http_metrics_count_errors_by_route_and_leave_nothing_in_flight(server):
    def rejected(reason: str) -> float | None:
        return series(httpx.get(server.url + "/metrics").text, "aedmae_requests_rejected_total", reason=reason)

    before = {reason: rejected(reason) for reason in ("unsupported_media_type", "payload_too_large")}
    assert httpx.post(server.url + "/v1/score", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert httpx.get(server.url + "/no/such/route").status_code == 404
    assert httpx.post(server.url + "/v1/score", content=b"x" * (3 << 20), headers=NPY_HEADERS).status_code == 413
    assert {reason: rejected(reason) - count for reason, count in before.items()} == dict.fromkeys(before, 1.0)
    text = httpx.get(server.url + "/metrics").text
    assert 'aedmae_http_requests_total{code="415",route="/v1/score"}' in text
    assert 'aedmae_http_requests_total{code="404",route="unmatched"}' in text
    assert 'aedmae_http_request_duration_seconds_count{route="/v1/score"}' in text
    assert "aedmae_http_requests_in_flight 1.0" in text  # the /metrics request itself, nothing left over
