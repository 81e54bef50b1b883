"""Events from file cameras through the real HTTP stack: SSE, webhook, snapshots, validity, the
drop policy and config-file cameras (the shipped model on real footage: test_stream_shipped.py)."""

import json
import threading
import time
from types import SimpleNamespace
from typing import ClassVar

import cv2
import httpx
import numpy as np
import pytest

from model.metrics import OnlineSmoother, gaussian_smooth
from service.stream_hub import StreamManager
from tests.conftest import (
    QuietHandler,
    camera,
    http_server,
    npy_body,
    scene_frames,
    video_frames,
    wait_for,
    write_video,
)
from tests.service.conftest import live_server

ALWAYS = {"enter": 0.0, "exit": 0.0, "min_duration_s": 0.0, "cooldown_s": 0.0}  # any valid frame is an event


class Hook(QuietHandler):
    received: ClassVar[list] = []

    def do_POST(self):
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()


def read_sse(c, messages, stop):
    with c.stream("GET", "/v1/events", params={"stream": "clip"}) as r:
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                messages.append((kind, json.loads(line[6:])))
            if stop.is_set() or len(messages) >= 2:
                return


def test_file_camera_event_reaches_sse_webhook_and_snapshot(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr("service.stream_routes.KEEPALIVE_S", 0.3)
    clip = write_video(tmp_path / "clip.mp4", scene_frames(40, 96, 128, seed=3))
    with (http_server(Hook) as hook,
          live_server(model=tiny_checkpoint, webhook_url=f"http://127.0.0.1:{hook.server_port}/events") as srv,
          httpx.Client(base_url=srv.url, timeout=30) as c):
        messages, stop = [], threading.Event()
        reader = threading.Thread(target=read_sse, args=(c, messages, stop), daemon=True)
        reader.start()
        assert wait_for(lambda: srv.app.state.streams.bus.subscribers == 1, 10)
        r = c.post("/v1/streams", json={"id": "clip", "url": str(clip), "events": ALWAYS})
        assert r.status_code == 201
        assert wait_for(lambda: camera(c, "clip")["state"] == "ended" and len(messages) == 2, 30), (camera(c, "clip"),
                                                                                                   messages)
        stop.set()
        s = camera(c, "clip")
        assert s["frames"]["scored"] == s["frames"]["received"] == 40  # a file: every frame, no drops
        assert sum(s["frames"]["dropped"].values()) == 0 and s["events_total"] == 1
        (k1, start), (k2, end) = messages
        assert (k1, k2) == ("start", "end") and start["id"] == end["id"] and start["stream"] == "clip"
        assert start["start_frame"] == 0 and end["end_reason"] == "gap" and end["end_frame"] == 39
        assert end["peak_regions"] and all(0 <= r["box"][0] < r["box"][2] <= 1 for r in end["peak_regions"])
        assert wait_for(lambda: len(Hook.received) == 2, 10)
        assert [m["type"] for m in Hook.received] == ["start", "end"] and Hook.received[1]["event"] == end
        snap = c.get(end["snapshot"])
        assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(snap.content, np.uint8), cv2.IMREAD_COLOR).shape[1] == 640
        assert [e["id"] for e in c.get("/v1/streams/clip/events").json()["events"]] == [end["id"]]
        first = srv.app.state.streams.bus.log[0][0]  # the start message's id
        assert sse_kinds(c, first)[0] == ["end"]  # reconnecting clients get what they missed
        assert 'aedmae_webhook_deliveries_total{outcome="delivered"} 2.0' in c.get("/metrics").text
        other = sse_kinds(c, first - 1, stream="other")  # another camera's subscriber: nothing of this one's
        assert other == ([], {"cache-control": "no-cache", "x-accel-buffering": "no"})
        assert wait_for(lambda: srv.app.state.streams.bus.subscribers == 0, 10), "gone subscribers unsubscribed"
        assert mjpeg_parts(c, "clip") == 1, "an ended camera's preview is sent once, not again at every tick"
        watcher = threading.Thread(target=mjpeg_parts, args=(c, "clip", 30.0, 30.0), daemon=True)
        watcher.start()
        time.sleep(0.5)
        assert c.delete("/v1/streams/clip").status_code == 204
        watcher.join(5)
        assert not watcher.is_alive(), "a removed camera's preview ends"


def sse_kinds(c, after, stream=None):
    """The event kinds /v1/events replays after ``after`` (for ``stream`` only, when given) before its
    first keepalive (KEEPALIVE_S is shortened for the test), and the response's caching headers."""
    kinds = []
    params = {"stream": stream} if stream else {}
    with c.stream("GET", "/v1/events", params=params, headers={"Last-Event-ID": str(after)}) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                kinds.append(line[7:])
            elif line.startswith(": keepalive"):
                break
        return kinds, {k: r.headers.get(k) for k in ("cache-control", "x-accel-buffering")}


def mjpeg_parts(c, sid, seconds=1.5, quiet_s=1.0):
    """JPEG parts of the camera's MJPEG preview within ``seconds``, until it ends or sends nothing for
    ``quiet_s``."""
    parts, end = 0, time.monotonic() + seconds
    try:
        with c.stream("GET", f"/v1/streams/{sid}/preview.mjpg", timeout=httpx.Timeout(30, read=quiet_s)) as r:
            for chunk in r.iter_bytes():
                parts += chunk.count(b"--aedmaeframe")
                if time.monotonic() > end:
                    break
    except httpx.ReadTimeout:  # nothing new to send
        pass
    return parts


def test_preview_boxes_the_hottest_regions_only_during_an_event():
    heat = np.zeros((4, 6), np.float32)
    heat[3, 5] = 1.0  # the bottom-right token: its box spans x 533..639, y 320..426 of the 640-wide preview
    latest = {"image": np.full((32, 48, 1), 90, np.uint8), "heatmap": heat, "invalid_reason": None, "frame": 7}
    hub = SimpleNamespace(runtime=SimpleNamespace(heatmap_scale=2.0))

    stream = SimpleNamespace(latest=latest, spec=SimpleNamespace(id="cam"), current_score=lambda: 0.9,
                             detector=SimpleNamespace(active=None), preview_cache=None)

    def preview(active: object) -> np.ndarray:
        stream.detector.active = active
        jpeg = StreamManager.preview_jpeg(hub, stream)  # type: ignore[arg-type]
        return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)

    diff = np.abs(preview(object()) - preview(None)).max(axis=2)
    assert diff[330:420, 531:536].mean() > 60  # the box's left edge, drawn only with an event open
    assert diff[100:300, 100:500].mean() < 2  # the rest of the picture is the same


def test_preview_is_rendered_once_for_all_viewers_of_a_frame(monkeypatch):
    import service.stream_hub as hub_module

    renders = []
    monkeypatch.setattr(hub_module, "render", lambda *a, **k: renders.append(a[3]) or f"jpeg{len(renders)}".encode())
    latest = {"image": np.zeros((8, 12, 1), np.uint8), "heatmap": np.zeros((1, 2)), "invalid_reason": None, "frame": 7}
    score = [0.4]
    stream = SimpleNamespace(latest=latest, spec=SimpleNamespace(id="cam"), current_score=lambda: score[0],
                             detector=SimpleNamespace(active=None), preview_cache=None)
    hub = SimpleNamespace(runtime=SimpleNamespace(heatmap_scale=2.0))
    views = [StreamManager.preview_jpeg(hub, stream) for _ in range(5)]  # type: ignore[arg-type]
    assert views == [b"jpeg1"] * 5 and renders == ["cam #7 score 0.40"]
    score[0] = 0.8  # the smoothed score of the same frame settles: the caption changes, so it is drawn again
    assert StreamManager.preview_jpeg(hub, stream) == b"jpeg2"  # type: ignore[arg-type]
    stream.latest = {**latest, "frame": 8}  # the next frame
    assert StreamManager.preview_jpeg(hub, stream) == b"jpeg3" and len(renders) == 3  # type: ignore[arg-type]


def test_frozen_or_blank_camera_raises_no_event(tiny_checkpoint, tmp_path):
    moving = write_video(tmp_path / "moving.mp4", scene_frames(75, 96, 128, seed=4))
    frozen = write_video(tmp_path / "frozen.mp4", np.repeat(scene_frames(1, 96, 128, seed=4), 75, axis=0))
    blank = write_video(tmp_path / "blank.mp4", np.zeros((75, 96, 128, 3), np.uint8))
    events = ALWAYS | {"min_duration_s": 1.5}  # frozen shows after 1 s of identical frames
    with live_server(model=tiny_checkpoint) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for name, path in (("moving", moving), ("frozen", frozen), ("blank", blank)):
            assert c.post("/v1/streams", json={"id": name, "url": str(path), "events": events}).status_code == 201
        assert wait_for(lambda: all(camera(c, n)["state"] == "ended" for n in ("moving", "frozen", "blank")), 40)
        assert wait_for(lambda: camera(c, "blank")["frames"]["scored"] == 75, 10)
        assert camera(c, "moving")["events_total"] == 1
        assert camera(c, "frozen")["events_total"] == 0 and camera(c, "blank")["events_total"] == 0
        reasons = {x["invalid_reason"] for x in c.get("/v1/streams/frozen/scores").json()["scores"]}
        assert reasons == {None, "frozen"}
        assert {x["invalid_reason"] for x in c.get("/v1/streams/blank/scores").json()["scores"]} == {"blank"}


def test_scene_cut_restarts_the_window_and_ends_the_open_event(tiny_checkpoint, tmp_path):
    """A file spliced from two scenes (another camera switched onto the stream): no frame's window
    t-3..t+3 spans the cut, so each part scores exactly as its own clip does alone, and the event open
    at the cut ends there ("cut"); the camera and /metrics count the cut once."""
    first, second = scene_frames(30, 96, 128, seed=4), scene_frames(30, 96, 128, seed=9)
    second[:, :, 64:] += 50  # the other camera sees a bright wall on the right (these textures alone are faint)
    clips = {"first": first, "second": second, "spliced": np.concatenate([first, second])}
    with live_server(model=tiny_checkpoint) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for name, frames in clips.items():
            path = write_video(tmp_path / f"{name}.avi", frames, fourcc="MJPG")
            assert c.post("/v1/streams", json={"id": name, "url": str(path), "events": ALWAYS}).status_code == 201

        def done(name: str) -> bool:
            described = camera(c, name)
            return described["state"] == "ended" and described["frames"]["scored"] == len(clips[name])

        assert wait_for(lambda: all(done(n) for n in clips), 60), [camera(c, n) for n in clips]
        records = {n: c.get(f"/v1/streams/{n}/scores").json()["scores"] for n in clips}
        scores = {n: [x["score"] for x in records[n]] for n in clips}
        assert wait_for(lambda: all(e["end_frame"] is not None
                                    for e in c.get("/v1/streams/spliced/events").json()["events"]), 10)
        events = c.get("/v1/streams/spliced/events").json()["events"]
        cuts = {n: camera(c, n)["scene_cuts"] for n in clips}
        exported = c.get("/metrics").text
    assert cuts == {"first": 0, "second": 0, "spliced": 1}
    assert [x["frame"] for x in records["spliced"] if x["cut"]] == [30] and not any(x["cut"] for x in records["first"])
    assert scores["spliced"] == pytest.approx(scores["first"] + scores["second"], rel=1e-4)
    assert [(e["start_frame"], e["end_frame"], e["end_reason"]) for e in events] == [(0, 29, "cut"), (30, 59, "gap")]
    assert 'aedmae_stream_scene_cuts_total{stream="spliced"} 1.0' in exported


def test_camera_smoothing_is_the_evaluations_and_causal_on_request(tiny_checkpoint, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", scene_frames(60, 32, 48, seed=0), fps=20)  # the calibration scene
    sigma = 0.2 * 20  # frames
    with live_server(model=tiny_checkpoint) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for name, delay in (("centred", {}), ("causal", {"smoothing_delay_s": 0.0})):
            events = {"smoothing_sigma_s": 0.2, **delay}
            assert c.post("/v1/streams", json={"id": name, "url": str(clip), "events": events}).status_code == 201
        assert wait_for(lambda: all(camera(c, n)["state"] == "ended" and camera(c, n)["frames"]["scored"] == 60
                                    for n in ("centred", "causal")), 40)
        centred, causal = (c.get(f"/v1/streams/{n}/scores", params={"limit": 100}).json()["scores"]
                           for n in ("centred", "causal"))
        delays = [camera(c, n)["smoothing_delay_frames"] for n in ("centred", "causal")]
    assert delays == [12, 0], "3 sigma at the file's 20 fps, or none"
    assert [x["frame"] for x in centred] == list(range(60)) and all(x["valid"] for x in centred)
    calibrated = np.array([x["calibrated"] for x in centred])
    assert np.array_equal(calibrated, [x["calibrated"] for x in causal]), "the same frames score the same"
    assert np.allclose([x["smoothed"] for x in centred], gaussian_smooth(calibrated, sigma), atol=1e-9), \
        "the service's default smoothing is the one `aedmae evaluate` reports"
    assert np.allclose([x["smoothed"] for x in causal], OnlineSmoother(sigma, 0).smooth(calibrated), atol=1e-9)
    assert calibrated.std() > 0.01 and not np.allclose([x["smoothed"] for x in centred],
                                                       [x["smoothed"] for x in causal], atol=1e-3)


def test_live_drop_policy_keeps_the_freshest_and_counts_every_drop(tiny_checkpoint, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", scene_frames(100, 96, 128, seed=5))
    # batches wait up to 300 ms to fill; a camera may queue 2 frames and keep a frame 0.2 s: it must drop
    # (and would shed load, which the next test covers)
    with live_server(model=tiny_checkpoint, max_batch_delay_ms=300, max_pending_per_stream=2,
                     stream_staleness_s=0.2, stream_shedding=False) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/v1/streams", json={"id": "live", "url": str(clip), "realtime": True}).status_code == 201
        assert wait_for(lambda: camera(c, "live")["state"] == "ended", 30)
        assert wait_for(lambda: sum(camera(c, "live")["frames"]["dropped"].values())
                        + camera(c, "live")["frames"]["scored"] == 100, 10), camera(c, "live")
        frames = camera(c, "live")["frames"]
        assert frames["dropped"]["superseded"] > 0 and frames["scored"] > 0, frames
        assert max(x["frame_age_s"] for x in c.get("/v1/streams/live/scores").json()["scores"]) < 0.2 + 0.1
        metrics = c.get("/metrics").text
        assert 'aedmae_stream_frames_dropped_total{reason="superseded",stream="live"}' in metrics


def test_config_file_cameras_start_with_the_server(tiny_checkpoint, tmp_path, monkeypatch):
    clip = write_video(tmp_path / "clip.mp4", scene_frames(20, 96, 128, seed=6))
    config = tmp_path / "aedmae.json"
    config.write_text(json.dumps({"cameras": [{"id": "gone", "url": str(tmp_path / "missing.mp4")},  # first:
                                              {"id": "door", "url": str(clip), "fps": 12.5}]}))  # the next starts
    monkeypatch.setenv("AEDMAE_CONFIG", str(config))
    with live_server(model=tiny_checkpoint) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert wait_for(lambda: c.get("/v1/streams/door").status_code == 200
                        and camera(c, "door")["state"] == "ended", 20)
        assert camera(c, "door")["frames"]["sampled"] == 10  # 25 fps file sampled at 12.5
        assert c.get("/v1/streams/gone").status_code == 404  # logged, not started; the server still runs


def test_an_overloaded_camera_sheds_to_every_third_frame_with_the_same_raw_scores(tiny_checkpoint, tmp_path):
    """Batches that wait 150 ms and 2 queued frames a camera: at 25 fps its frames are superseded at
    once, so it keeps every third frame (one every 120 ms, which fits); each of those, where its t-3
    and t+3 were kept too, scores exactly what the whole clip sent in one request scores for it."""
    clip = write_video(tmp_path / "clip.mp4", scene_frames(90, 96, 128, seed=5))
    decoded = [f[..., ::-1] for f in video_frames(clip)]  # RGB, as an npy body carries it
    with live_server(model=tiny_checkpoint, max_batch_delay_ms=150, max_pending_per_stream=2,
                     stream_staleness_s=5.0) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        whole = c.post("/v1/score", content=npy_body(np.stack(decoded)),
                       headers={"content-type": "application/x-npy"}).json()["frames"]
        assert c.post("/v1/streams", json={"id": "busy", "url": str(clip), "realtime": True}).status_code == 201
        assert wait_for(lambda: camera(c, "busy")["state"] == "ended", 30)
        assert wait_for(lambda: sum(camera(c, "busy")["frames"]["dropped"].values())
                        + camera(c, "busy")["frames"]["scored"] == 90, 10), camera(c, "busy")
        state = camera(c, "busy")
        scores = c.get("/v1/streams/busy/scores", params={"limit": 100}).json()["scores"]
        metrics = c.get("/metrics").text
    assert state["shedding"] and state["shedding_entered"] == 1 and state["frames"]["dropped"]["shed"] > 30, state
    shed = {r["frame"]: r for r in scores if r["shed"]}
    kept = sorted(shed)
    # every third frame; a kept frame superseded in a stall of this shared machine leaves a gap of 6
    gaps = np.diff(kept)
    assert len(kept) >= 10 and np.all(gaps % 3 == 0) and np.mean(gaps == 3) >= 0.8, kept
    interior = [f for f in kept if f - 3 in shed and f + 3 in shed]
    assert len(interior) >= 8
    np.testing.assert_allclose([shed[f]["score"] for f in interior], [whole[f]["score"] for f in interior],
                               rtol=1e-5)
    assert 'aedmae_stream_frames_dropped_total{reason="shed",stream="busy"}' in metrics


def test_a_poller_is_told_what_it_missed_and_goes_on_across_a_restart(tiny_checkpoint, tmp_path):
    """Paging by seq is lossless only while the poller is within stream_history of the newest record:
    beyond that the answer says how many it missed. Seqs go on across lives of a camera (they start
    at its start time in ms), so a poller's seq from before a restart or re-registration pages the new
    life from its start, where seqs counting from 1 again found nothing until the new life caught up."""
    clip = write_video(tmp_path / "clip.mp4", scene_frames(30, 96, 128, seed=3))
    with live_server(model=tiny_checkpoint, stream_history=10) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/v1/streams", json={"id": "clip", "url": str(clip)}).status_code == 201
        def newest():
            return (c.get("/v1/streams/clip/scores", params={"limit": 1}).json()["scores"] or [None])[0]

        # the file has ended and its last frame is scored and smoothed (state "ended" comes before that)
        assert wait_for(lambda: camera(c, "clip")["frames"]["scored"] == 30 and newest()["final"], 30), newest()
        base = newest()["seq"] - 30
        page = c.get("/v1/streams/clip/scores", params={"after": base + 5, "limit": 4}).json()
        assert page["missed"] == 30 - 10 - 5  # records 6..20 are no longer kept
        assert [x["seq"] - base for x in page["scores"]] == [21, 22, 23, 24] and page["next_after"] == base + 24
        assert all(x["final"] for x in page["scores"])  # the file ended: every record's smoothing is done
        page = c.get("/v1/streams/clip/scores", params={"after": base + 24}).json()
        assert page["missed"] == 0 and [x["seq"] - base for x in page["scores"]] == [25, 26, 27, 28, 29, 30]
        page = c.get("/v1/streams/clip/scores", params={"after": base + 30}).json()
        assert page["scores"] == [] and page["next_after"] == base + 30
        for before in (0, base - 777):  # from the start, or a seq from an earlier life: this life from its start
            page = c.get("/v1/streams/clip/scores", params={"after": before, "limit": 2}).json()
            assert page["missed"] == 20 and [x["seq"] - base for x in page["scores"]] == [21, 22]
        assert c.delete("/v1/streams/clip").status_code == 204  # a new life of the camera: seqs go on
        assert c.post("/v1/streams", json={"id": "clip", "url": str(clip)}).status_code == 201
        assert wait_for(lambda: camera(c, "clip")["frames"]["scored"] == 30 and newest()["final"], 30), newest()
        page = c.get("/v1/streams/clip/scores", params={"after": base + 30, "limit": 1}).json()
        assert page["scores"][0]["seq"] > base + 30 and page["missed"] == 20
