"""A camera's bookkeeping (service.streams.Stream) driven frame by frame: the real model, runtime,
batcher and stream manager of a server, but frames handed to the camera by the test instead of its
reader thread, so that what happens at a stall, a scene cut or a blank picture is exact and quick;
for the rules about results coming back (their order, their segment, the scene check) the results
themselves are made up, as a worker returns them. The same paths run on real RTSP servers and files
in test_streams_api.py and test_stream_events.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from prometheus_client import generate_latest

from model.calibration import SCENE_CHECK_FRAMES
from model.metrics import OnlineSmoother
from service.batcher import Job
from service.errors import BadRequest, DeadlineExceeded, Overloaded
from service.metrics import Metrics
from service.runtime import ScoringRuntime
from service.settings import Settings, StreamSpec
from service.stream_hub import StreamManager
from service.streams import FrameMeta, Stream
from tests.conftest import scene_frames, series, wait_for

LIVE = "rtsp://127.0.0.1:9/never-opened"  # the reader is never started: the test feeds the camera


@pytest.fixture(scope="module")
def hub(tiny_checkpoint):
    settings = Settings(model=tiny_checkpoint, max_batch_size=8, max_batch_delay_ms=1, max_pending_per_stream=512,
                        stream_staleness_s=30, stream_shedding=False, stream_history=200)
    metrics = Metrics()
    runtime = ScoringRuntime(settings, metrics)
    runtime.start()
    manager = StreamManager(runtime, settings, metrics)
    yield manager
    manager.stop()
    runtime.stop()


def feed(stream: Stream, frames: np.ndarray, fps: float = 25.0) -> None:
    for i, frame in enumerate(frames):
        stream._on_frame(frame, 1e9 + i / fps, i / fps)


def settle(stream: Stream) -> dict:
    """Wait until every sampled frame is scored or dropped; the camera's description then."""
    assert wait_for(lambda: stream.scored + sum(stream.dropped.values()) == stream.sampled, 20), stream.describe()
    return stream.describe()


def _result(stream: Stream, index: int, calibrated: float, segment: int = 0) -> None:
    """Frame ``index`` of ``segment`` comes back from a batch with this calibrated score (a unit test of
    the bookkeeping: the frame's output is made up, as a worker would return it)."""
    h, w = stream.hub.runtime.bundle.image_size
    stream._meta[index] = FrameMeta(1e9 + index, index / 25, time.monotonic(), np.zeros((h, w, 3), np.uint8), None,
                                    segment)
    out = {"calibrated": calibrated, "score": calibrated, "teacher_error": 0.0, "discrepancy": 0.0,
           "heatmap": np.zeros(stream.hub.runtime.bundle.grid, np.float32)}
    stream._finish(index, Job(np.zeros(1), 0.0), None, out)


def test_a_stall_scores_the_frames_still_waiting_for_their_look_ahead(hub):
    """A live camera that stalls ends its segment: the last frames, whose t+3 never came, are scored
    with the window's edge clamped rather than left waiting for a frame that may never arrive."""
    stream = Stream(StreamSpec(id="stalls", url=LIVE), hub)
    feed(stream, scene_frames(20, 48, 72, seed=1))
    assert wait_for(lambda: stream.scored == 20 - stream.gap, 20)
    stream._on_state("stalls", "stalled")
    assert settle(stream)["frames"]["scored"] == 20
    assert [r["frame"] for r in stream.history] == list(range(20))


def test_two_scene_cuts_one_frame_apart_are_both_noticed(hub):
    """After a cut the fresh detector compares the next frame with the cut's own frame: a camera
    switched to another preset and at once to a third shows two cuts, each starting a segment."""
    scenes = [scene_frames(8, 48, 72, seed=s) for s in (2, 3, 4)]
    stream = Stream(StreamSpec(id="presets", url=LIVE), hub)
    feed(stream, np.concatenate([scenes[0], scenes[1][:1], scenes[2]]))
    stream._on_state("presets", "ended")
    described = settle(stream)
    assert described["scene_cuts"] == 2
    assert [r["frame"] for r in stream.history if r["cut"]] == [8, 9]


def test_the_gauge_keeps_the_last_final_smoothed_score_through_blank_frames(hub):
    """The score gauge (and `anomaly_score`) is the newest final smoothed score, not the newest raw one;
    blank frames get no smoothed score, so the gauge keeps the last valid one through them."""
    stream = Stream(StreamSpec(id="covered", url=LIVE), hub)
    frames = scene_frames(30, 32, 48, seed=5)  # at the model's size, as its calibration footage: scores near 0.1
    feed(stream, np.concatenate([frames, np.full((10, 32, 48, 3), 128, np.uint8)]))
    stream._on_state("covered", "ended")
    described = settle(stream)
    records = list(stream.history)
    assert [r["invalid_reason"] for r in records[30:]] == ["blank"] * 10
    assert all(r["final"] for r in records) and all(r["smoothed"] is None for r in records[30:])
    last_smoothed = [r["smoothed"] for r in records if r["smoothed"] is not None][-1]
    assert described["anomaly_score"] == stream.current_score() == last_smoothed
    assert described["scene"]["frames"] == 30, "blank frames are not judged against the scene either"
    assert hub.preview_jpeg(stream)[:2] == b"\xff\xd8" and stream.preview_cache[1].endswith(" blank")
    assert last_smoothed != records[-1]["calibrated"]


def test_smoothing_counts_scored_frames_a_second_while_shedding(hub):
    """Smoothing is set in seconds: while a camera keeps one frame in 3 its smoother spans a third of
    the frames it would at full rate."""
    stream = Stream(StreamSpec(id="sheds", url=LIVE, fps=24), hub)
    events = stream.spec.events
    full = OnlineSmoother.in_seconds(events.smoothing_sigma_s, events.smoothing_delay_s, 24).delay
    third = OnlineSmoother.in_seconds(events.smoothing_sigma_s, events.smoothing_delay_s, 8).delay
    assert full > third > 0
    assert stream.describe()["smoothing_delay_frames"] == full
    stream._end_segment("shed", stream.gap)
    assert stream.window.spacing == stream.gap == 3
    assert stream.describe()["smoothing_delay_frames"] == third


def test_a_camera_keeps_its_own_staleness(hub):
    own = Stream(StreamSpec(id="own", url=LIVE, staleness_s=0.3), hub)
    default = Stream(StreamSpec(id="default", url=LIVE), hub)
    recorded = Stream(StreamSpec(id="recorded", url="/footage/clip.mp4", staleness_s=0.3), hub)
    assert own.describe()["staleness_s"] == 0.3 and default.describe()["staleness_s"] == 30
    assert recorded.describe()["staleness_s"] is None, "a file waits for room: nothing is stale"


def test_refused_frames_are_counted_by_reason_and_never_retried_for_ever(hub, monkeypatch):
    """A full queue: a live camera drops the frame ("queue_full"); a file waits for room, unless its
    camera is being removed, when it drops it too instead of retrying for ever. A server shutting
    down refuses every frame ("not_ready")."""
    batcher = hub.runtime.batcher
    window = np.zeros((3, *hub.runtime.bundle.image_size, hub.runtime.bundle.channels), np.uint8)
    live = Stream(StreamSpec(id="full-live", url=LIVE), hub)
    recorded = Stream(StreamSpec(id="full-file", url="/footage/clip.mp4"), hub)
    monkeypatch.setattr(batcher, "capacity", 0)
    live._submit(0, window)
    assert live.dropped["queue_full"] == 1
    recorded.reader._stop.set()  # what Stream.stop does first
    submitting = threading.Thread(target=recorded._submit, args=(0, window), daemon=True)
    submitting.start()
    submitting.join(5)
    assert not submitting.is_alive() and recorded.dropped["queue_full"] == 1
    monkeypatch.undo()
    monkeypatch.setattr(batcher, "_stopping", True)
    live._submit(1, window)
    assert live.dropped["not_ready"] == 1 and live.dropped["error"] == 0


def test_a_frame_back_out_of_order_is_final_and_left_out_of_smoothing(hub):
    """With several workers a frame can come back after a later one, or after its segment ended: it is
    kept (final at once, not smoothed) while the in-order frames are smoothed as they were."""
    stream = Stream(StreamSpec(id="workers", url=LIVE), hub)
    for index in (0, 1, 3, 2):
        _result(stream, index, 0.1 * index)
    stream._scored_segment = stream._segment = 1  # the segment ended (a gap) before frame 4 came back
    _result(stream, 4, 0.4, segment=0)
    records = {r["frame"]: r for r in stream.history}
    assert records[2]["final"] and records[4]["final"]
    assert records[2]["smoothed"] is None and records[4]["smoothed"] is None
    assert not records[3]["final"], "in order: its smoothed score waits for the look-ahead"


def test_a_batch_outcome_is_counted_under_its_reason(hub):
    """A result future cancelled (superseded), failed past its deadline (stale) or with an error."""
    stream = Stream(StreamSpec(id="outcomes", url=LIVE), hub)
    for index, fail in enumerate((None, DeadlineExceeded("late"), RuntimeError("backend"))):
        job = Job(np.zeros(1), 0.0)
        if fail is None:
            job.future.cancel()
        else:
            job.future.set_exception(fail)
        stream._done(index, job, job.future)
    assert {k: v for k, v in stream.dropped.items() if v} == {"superseded": 1, "stale": 1, "error": 1}


def test_a_result_from_the_next_segment_first_closes_the_last_one(hub):
    """A gap's reset runs on the camera's thread; should a worker return the next segment's first frame
    before it has run, the frames still waiting for smoothing get it then (all final), and the next
    segment starts a smoother of its own."""
    stream = Stream(StreamSpec(id="early", url=LIVE), hub)
    for index in range(6):
        _result(stream, index, 0.2)
    assert stream.smoothing_delay_frames >= 2
    assert not all(r["final"] for r in stream.history)
    _result(stream, 6, 0.9, segment=1)
    records = {r["frame"]: r for r in stream.history}
    assert all(records[i]["final"] and records[i]["smoothed"] == pytest.approx(0.2) for i in range(6))
    assert not records[6]["final"]


def test_the_scene_is_judged_every_hundred_frames_until_it_warns(hub):
    """The unfamiliar-scene check runs at every SCENE_CHECK_FRAMES scored frames until it warns: a
    camera turned onto another scene after its first hundred frames is noticed once its recent
    frames (``stream_history``, 200 here) are all of the new scene."""
    stream = Stream(StreamSpec(id="turned", url=LIVE), hub)
    history = stream.history.maxlen
    for index in range(SCENE_CHECK_FRAMES):
        _result(stream, index, 0.1)
    assert stream.describe()["scene"]["warning"] is None
    for index in range(SCENE_CHECK_FRAMES, history + SCENE_CHECK_FRAMES):
        _result(stream, index, 1.0)
    assert stream.scene_warned and stream.describe()["scene"]["alert_share"] == 1.0


def test_removing_a_camera_cancels_its_queued_frames_and_ends_its_event(hub, monkeypatch):
    stream = Stream(StreamSpec(id="removed", url=LIVE), hub)
    for index in range(60):
        _result(stream, index, 0.95)
    event = stream.detector.active
    assert event is not None
    queued = Job(np.zeros(1), time.monotonic() + 60)
    stream._pending.append((60, queued))
    monkeypatch.setattr(stream.reader, "stop", lambda: None)  # never started here
    stream.stop()
    assert queued.future.cancelled()
    assert stream.detector.active is None and event.end_reason == "stream_removed"
    assert event.snapshot[:2] == b"\xff\xd8", "the event keeps a JPEG of its peak frame, not the arrays"


def test_quality_compares_scored_frames_with_the_wanted_rate(hub, monkeypatch):
    """A camera scored at its target fps (5 of its source's 25) is good; one whose frames a full queue
    refuses is degraded, though frames keep arriving."""
    sampled = Stream(StreamSpec(id="sampled", url=LIVE, fps=5), hub)
    sampled.reader.stats.state = "up"
    feed(sampled, scene_frames(100, 32, 48, seed=6))
    assert sampled.sampled == 20 and wait_for(lambda: sampled.scored == 20 - sampled.gap, 20)  # 3 await t+3
    quality = sampled.quality()
    assert quality["grade"] == "good", quality
    refused = Stream(StreamSpec(id="refused", url=LIVE), hub)
    refused.reader.stats.state = "up"
    monkeypatch.setattr(hub.runtime.batcher, "capacity", 0)
    feed(refused, scene_frames(20, 32, 48, seed=6))
    quality = refused.quality()
    assert refused.scored == 0 and quality["grade"] == "degraded" and quality["scored_to_wanted_fps"] == 0, quality


def _scrape(hub: StreamManager) -> str:
    """A real scrape of the server's registry, as /metrics serves it."""
    return generate_latest(hub.metrics.registry).decode()


def test_camera_series_are_read_from_the_camera_at_each_scrape(hub, monkeypatch):
    stream = Stream(StreamSpec(id="scraped", url=LIVE), hub)
    monkeypatch.setitem(hub._streams, "scraped", stream)
    monkeypatch.setattr(stream.reader, "stop", lambda: None)  # never started here

    def scraped(name: str) -> float | None:
        return series(_scrape(hub), name, stream="scraped")

    assert scraped("aedmae_stream_up") == 0.0
    assert scraped("aedmae_anomaly_score") is None and scraped("aedmae_stream_alert_share") is None
    stream.reader.stats.state, stream.reader.stats.reconnects, stream.reader.stats.stalls = "up", 2, 1
    feed(stream, np.concatenate([scene_frames(8, 32, 48, seed=7), scene_frames(8, 32, 48, seed=8)]))
    stream._on_state("scraped", "ended")
    settle(stream)
    assert scraped("aedmae_stream_up") == 1.0
    assert scraped("aedmae_stream_reconnects_total") == 2.0
    assert scraped("aedmae_stream_stalls_total") == 1.0
    assert scraped("aedmae_stream_scene_cuts_total") == 1.0
    assert scraped("aedmae_anomaly_score") == stream.current_score()
    assert scraped("aedmae_frame_age_seconds_count") == 16.0
    assert scraped("aedmae_stream_alert_share") is None, "under a hundred frames"
    for index in range(16, 16 + SCENE_CHECK_FRAMES):
        _result(stream, index, 1.0)
    assert scraped("aedmae_stream_alert_share") > 0.8
    hub.remove("scraped")
    assert 'stream="scraped"' not in _scrape(hub), "a removed camera's series go with it"


def test_scores_of_camera_frames_join_the_score_distribution(hub):
    stream = Stream(StreamSpec(id="distributed", url=LIVE), hub)
    name = "aedmae_anomaly_score_distribution_count"
    before = series(_scrape(hub), name, source="stream") or 0.0
    for index in range(5):
        _result(stream, index, 0.3)
    assert series(_scrape(hub), name, source="stream") == before + 5


def test_file_cameras_and_the_camera_count_are_limited_by_the_settings(hub, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    limited = StreamManager(hub.runtime, hub.settings.model_copy(update={"allow_file_streams": False,
                                                                         "max_streams": 1}), Metrics())
    try:
        with pytest.raises(BadRequest, match="allow_file_streams=false"):
            limited.add(StreamSpec(id="file", url=str(clip)))
        first = limited.add(StreamSpec(id="first", url=LIVE))
        with pytest.raises(Overloaded, match="max_streams"):
            limited.add(StreamSpec(id="second", url=LIVE))
        assert [s.spec.id for s in limited.list()] == ["first"]
    finally:
        limited.stop()
    assert not first.reader.alive, "stop returns once every camera's reader has ended"


def test_a_stopped_manager_leaves_the_registry_for_the_next(hub):
    """Stopping the stream manager unregisters its collector: another one (a restarted server in one
    process) registers its own on the same registry, and a scrape holds each camera family once
    (Prometheus refuses a scrape that names one twice)."""
    metrics = Metrics()
    StreamManager(hub.runtime, hub.settings, metrics).stop()
    second = StreamManager(hub.runtime, hub.settings, metrics)
    assert _scrape(second).count("# HELP aedmae_stream_up ") == 1
    second.stop()
