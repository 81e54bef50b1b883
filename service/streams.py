"""Cameras: each registered camera has its own reader thread (service/camera.py), samples frames to
its target fps, keeps its own temporal window (frames t-g..t+g, g the model's context gap, 3 for the
shipped model) and sends its ready frames into the
shared batcher, where they share batches with HTTP traffic. Results come back through the job's
future: smoothing (a frame's smoothed score and event verdict wait for its smoothing look-ahead,
``events.smoothing_delay_s``), event hysteresis, recent scores, the preview frame.

Drop policy (every drop is counted by reason):
- live cameras keep at most ``max_pending_per_stream`` frames queued; a newer frame replaces the
  oldest still waiting ("superseded"), so inference always works on the freshest frames;
- a live frame still unscored ``staleness_s`` after its input is complete (its look-ahead frame t+g has
  arrived) is dropped without running ("stale");
- a full server queue refuses the frame ("queue_full"); a failed batch loses its frames ("error");
- a live camera whose frames are being superseded sheds load: it keeps one frame in g only ("shed";
  stream_parts.Shedding, with ``stream_shedding``), each kept frame scored from the kept frames beside
  it (its t-g and t+g, as at full rate), until it has kept up for a while. Each switch starts a segment.
Local files are not live: every frame is scored, the reader waits for room instead of dropping
(unless the camera is registered with ``realtime``, which plays the file like a live camera).
A dropped frame is not scored, but it stays in the window as context for its neighbours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.calibration import SCENE_CHECK_FRAMES, scene_check
from model.cuts import CutDetector
from model.frames import to_model_frame
from model.metrics import InOrderSmoothing, OnlineSmoother
from model.window import FrameWindow
from service.batcher import Job
from service.camera import CameraReader, redact
from service.errors import DeadlineExceeded, Overloaded, ServiceError
from service.events import EventDetector
from service.settings import StreamSpec
from service.stream_parts import RateMeter, Sampler, Shedding, Validity, page

log = logging.getLogger(__name__)
DROP_REASONS = ("superseded", "stale", "queue_full", "error", "not_ready", "shed")


@dataclass
class FrameMeta:
    t_capture: float  # unix time the frame was read
    t_media: float  # the source's clock (file position, or service.camera.live_clock for live cameras)
    t_read: float  # time.monotonic() when it was read: its age when scored, whatever the wall clock does
    frame: np.ndarray  # model-size frame (H, W, C), for the preview and event snapshots
    invalid: str | None  # "frozen" | "blank" | None
    segment: int  # frames of one connection; a gap or a scene cut starts the next
    cut: bool = False  # the first frame after a scene cut
    shed: bool = False  # kept while shedding: scored from the kept frames beside it


class Stream:
    def __init__(self, spec: StreamSpec, hub: Any) -> None:
        """``hub`` is the StreamManager: runtime, settings, metrics and the event bus."""
        self.spec, self.hub = spec, hub
        self.file = spec.file_path is not None
        self.live = not self.file or spec.realtime
        s = hub.settings
        self.staleness_s = spec.staleness_s or s.stream_staleness_s
        self.max_pending = s.max_pending_per_stream
        self.reader = CameraReader(spec.id, spec.url, self._on_frame, spec.stall_timeout_s, spec.open_timeout_s,
                                   on_state=self._on_state, is_file=self.file)
        self.created = time.time()
        self.received = self.sampled = self.scored = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.events_total = self.scene_cuts = 0
        self._end_reason = "gap"  # why the last segment ended: "gap" (reconnect, stall, end of file), "cut", "shed"
        self.scene_warned = False  # the unfamiliar-scene warning is logged once per camera
        self.input_rate, self.scored_rate = RateMeter(), RateMeter()
        self.history: deque[dict[str, Any]] = deque(maxlen=s.stream_history)
        self.latest: dict[str, Any] | None = None  # the newest scored frame: preview and GET
        # each record's "seq" (lossless polling, the preview): one up from the camera's start time in ms,
        # so seqs go on from one life of a camera (server restart, re-registration) to the next
        self.seq_base = self.seq = time.time_ns() // 1_000_000
        self.preview_cache: tuple[dict[str, Any], str, bool, bytes] | None = None  # StreamManager.preview_jpeg
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._pending: deque[tuple[int, Job]] = deque()  # queued jobs, oldest first
        self._meta: dict[int, FrameMeta] = {}
        self._base = 0  # stream frame index of the current segment's frame 0
        self._last_done = -1
        self._realtime_start: tuple[float, float] | None = None
        self._segment = 0  # segment that new frames belong to
        self._scored_segment = 0  # segment the smoother and the event detector are following
        self.detector = EventDetector(spec.id, spec.events)
        self.gap = hub.runtime.bundle.context_gap  # the model's window: its look-ahead and its shedding stride
        self.shedding = Shedding(s.stream_shedding and self.live, stride=self.gap)
        self.smoothing: InOrderSmoothing | None = None
        self.smoothed_latest: float | None = None  # the newest final smoothed score (smoothing delay behind)
        self._reset_window()
        self._reset_scoring()

    # -- segments: a gap (reconnect, stall, end of file) starts a fresh window, smoother and count ----
    def _reset_window(self, spacing: int = 1) -> None:
        """A fresh window; ``spacing`` = the context gap while shedding (it holds every gap-th sampled frame)."""
        self.window = FrameWindow(spacing, self.gap)
        self._cycle = 0  # sampled frames of this segment: kept when a multiple of the spacing
        self.sampler = Sampler(self.spec.fps)
        self.validity = Validity()
        self.cut_detector = CutDetector(self.hub.settings.scene_cut_change)
        self._realtime_start = None

    @property
    def frame_rate(self) -> float:
        """Frames per second after sampling: the target fps, else the source's, else 25."""
        return self.spec.fps or self.reader.stats.source_fps or 25.0

    def _reset_scoring(self) -> list[Any]:
        """A gap: the frames still waiting for smoothing get it (the last score repeated), then any open
        event ends; the next scored frame starts a fresh smoother (at the source's frame rate, known by then)."""
        events = self._apply_smoothed(self.smoothing.flush()) if self.smoothing else []
        self.smoothing = None
        return events + self.detector.interrupt(self._end_reason)

    def _new_smoothing(self) -> InOrderSmoothing:
        ev, rate = self.spec.events, self.frame_rate / self.window.spacing  # scored frames a second
        return InOrderSmoothing(OnlineSmoother.in_seconds(ev.smoothing_sigma_s, ev.smoothing_delay_s, rate))

    def _apply_smoothed(self, released: list[tuple[Any, float | None]]) -> list[Any]:
        """Frames whose smoothed score is final, in order: into their records and the event detector."""
        events: list[Any] = []
        for (index, meta, heatmap, record), smoothed in released:
            record["smoothed"], record["final"] = smoothed, True
            if smoothed is not None:
                self.smoothed_latest = smoothed
            events += self.detector.update(index, meta.t_media, meta.t_capture, smoothed, (meta.frame, heatmap))
            record["event"] = self.detector.active.id if self.detector.active else None
        return events

    @property
    def smoothing_delay_frames(self) -> int:
        return (self.smoothing or self._new_smoothing()).smoother.delay

    def current_score(self) -> float | None:
        """The newest final smoothed score, else the newest calibrated one (the gauge and the preview)."""
        if self.smoothed_latest is not None:
            return self.smoothed_latest
        return self.latest["calibrated"] if self.latest else None

    def _end_segment(self, reason: str = "gap", stride: int | None = None) -> None:
        """Score the frames still waiting for their look-ahead (edges clamped), wait for the segment's
        frames in flight, then end any open event: no event spans the gap (or the scene cut, or the
        switch to ``stride``)."""
        with self._lock:
            self._end_reason = reason
            ready = self.window.flush()
            base, step = self._base, self.window.spacing
            self._base += self._cycle
            self._segment += 1
            self._reset_window(stride or step)
        for t, x in ready:
            self._submit(base + t * step, x)
        with self._lock:
            end = time.monotonic() + (self.staleness_s + 1 if self.live else 30.0)
            while any(i < self._base for i, _ in self._pending) and time.monotonic() < end:
                self._room.wait(0.1)
            events = self._reset_scoring() if self._scored_segment < self._segment else []
            self._scored_segment = self._segment
        self._publish(events)

    def _on_state(self, camera_id: str, state: str) -> None:
        if state in ("down", "stalled", "ended"):
            self._end_segment()
        if state == "ended":
            log.info("camera %s: end of file after %d frames", camera_id, self.received)

    # -- reader thread ------------------------------------------------------------------------------
    def _on_frame(self, image: np.ndarray, t_capture: float, t_media: float) -> None:
        t_read = time.monotonic()
        self.received += 1
        self.input_rate.tick()
        if self.file and self.spec.realtime:
            self._pace(t_media)
        if not self.sampler.take(t_media):
            return
        self.sampled += 1
        switch = self.shedding.decide(time.monotonic())
        if switch is not None:
            log.warning("camera %s: %s", self.spec.id, f"frames superseded: scoring one frame in {switch}" if switch > 1
                        else f"kept up for {self.shedding.hold_s:.0f} s: scoring every frame again")
            self._end_segment("shed", switch)
        if self._cycle % self.window.spacing:
            self._cycle += 1
            self.dropped["shed"] += 1  # only this thread writes this count
            return
        runtime = self.hub.runtime
        frame = to_model_frame(image, runtime.bundle.image_size, runtime.bundle.channels)
        with self._lock:
            cut = self.cut_detector.check(frame)
        if cut is not None:
            self._cut(frame, cut)
        with self._lock:
            invalid = self.validity.check(frame, t_media)
            ready = self.window.push(frame)
            index = self._base + self._cycle
            self._cycle += 1
            self._meta[index] = FrameMeta(t_capture, t_media, t_read, frame, invalid, self._segment, cut is not None,
                                          self.window.spacing > 1)
            base, step = self._base, self.window.spacing
        for t, x in ready:
            self._submit(base + t * step, x)

    def _cut(self, frame: np.ndarray, change: float) -> None:
        """A scene cut before this frame: the frames before it are scored with their window ending at
        the cut, and this frame starts a fresh segment (window, smoother; an open event ends, "cut")."""
        self.scene_cuts += 1
        log.warning("camera %s: scene cut before frame %d (picture change %.2f from the frame before); "
                    "the window, smoothing and any open event restart there", self.spec.id,
                    self._base + self._cycle, change)
        self._end_segment("cut")
        with self._lock:
            self.cut_detector.check(frame)  # the fresh detector compares the next frame with this one

    def _pace(self, t_media: float) -> None:
        """Realtime files: wait until the frame's time in the file has come."""
        now = time.monotonic()
        if self._realtime_start is None:
            self._realtime_start = (now, t_media)
        delay = self._realtime_start[0] + (t_media - self._realtime_start[1]) - now
        if delay > 0:
            self.reader.sleep(delay)

    def _submit(self, index: int, x: np.ndarray) -> None:
        runtime = self.hub.runtime
        # the staleness budget runs from when the frame's input is complete (its look-ahead frame arrived)
        deadline = time.monotonic() + (self.staleness_s if self.live else runtime.settings.request_timeout_s * 100)
        job = Job(x, deadline, source=self.spec.id)
        superseded = []
        with self._lock:
            if self.live:
                while len(self._pending) >= self.max_pending:
                    superseded.append(self._pending.popleft()[1])
            else:
                while len(self._pending) >= self.max_pending and not self.reader.stopping:
                    self._room.wait(0.5)  # a file waits for room: every frame is scored
            self._pending.append((index, job))
        # outside the lock: cancel() runs the done-callback, which takes the lock; a job already running
        runtime.batcher.cancel(superseded)  # cannot be cancelled and is scored after all
        while True:
            try:
                runtime.batcher.submit([job])
                break
            except Overloaded:
                if self.live or self.reader.stopping:
                    self._finish(index, job, "queue_full")
                    return
                time.sleep(0.05)
            except ServiceError:
                self._finish(index, job, "not_ready")
                return
        job.future.add_done_callback(lambda f: self._done(index, job, f))

    # -- worker threads (batch results) -------------------------------------------------------------
    def _done(self, index: int, job: Job, future: Future[dict[str, Any]]) -> None:
        if future.cancelled():
            self._finish(index, job, "superseded")
        elif isinstance(future.exception(), DeadlineExceeded):
            self._finish(index, job, "stale")
        elif future.exception() is not None:
            self._finish(index, job, "error")
        else:
            self._finish(index, job, None, future.result())

    def _finish(self, index: int, job: Job, dropped: str | None, out: dict[str, Any] | None = None) -> None:
        events: list[Any] = []
        with self._lock:
            self._pending = deque(p for p in self._pending if p[1] is not job)
            self._room.notify_all()
            meta = self._meta.pop(index, None)
            if dropped is not None or out is None or meta is None:
                self.dropped[dropped or "error"] += 1
                if dropped == "superseded":
                    self.shedding.pressure(time.monotonic())
                return
            self.scored += 1
            self.scored_rate.tick()
            calibrated = float(out["calibrated"])
            if meta.segment > self._scored_segment:  # the gap's own reset has not run yet: do it now
                events += self._reset_scoring()
                self._scored_segment = meta.segment
            in_order = index > self._last_done and meta.segment == self._scored_segment
            age = time.monotonic() - meta.t_read
            record = {"frame": index, "capture_time": meta.t_capture, "media_time": round(meta.t_media, 4),
                      "score": float(out["score"]), "teacher_error": float(out["teacher_error"]),
                      "discrepancy": float(out["discrepancy"]), "calibrated": calibrated, "smoothed": None,
                      "final": not in_order,  # an out-of-order frame is not smoothed: nothing more to come
                      "valid": meta.invalid is None, "invalid_reason": meta.invalid, "cut": meta.cut, "event": None,
                      "shed": meta.shed,
                      "frame_age_s": round(age, 4), "lookahead_frames": self.gap,
                      "lookahead_s": round(self.gap / self.frame_rate, 4)}
            if in_order:  # smoothed and event are filled in once the smoothing look-ahead has arrived
                self._last_done = index
                self.smoothing = self.smoothing or self._new_smoothing()
                events += self._apply_smoothed(self.smoothing.push((index, meta, out["heatmap"], record),
                                                                   calibrated if meta.invalid is None else None))
            self.seq += 1
            record["seq"] = self.seq
            self.history.append(record)
            self.latest = {**record, "image": meta.frame, "heatmap": out["heatmap"]}
        self.hub.observe_frame(self.spec.id, age, calibrated)
        self._publish(events)
        if not self.scene_warned and self.scored % SCENE_CHECK_FRAMES == 0:
            self._check_scene()

    def scene(self) -> dict[str, Any]:
        """model.calibration.scene_check over the recent valid frames (``stream_history`` of them)."""
        with self._lock:
            values = [r["calibrated"] for r in self.history if r["valid"]]
        return scene_check(values)

    def _check_scene(self) -> None:
        warning = self.scene()["warning"]
        if warning:
            self.scene_warned = True
            log.warning("camera %s: %s", self.spec.id, warning)

    def _publish(self, events: list[Any]) -> None:
        for kind, ev in events:
            if kind == "start":
                self.events_total += 1
            self.hub.publish(kind, ev)

    # -- control and description --------------------------------------------------------------------
    def start(self) -> Stream:
        self.reader.start()
        return self

    def stop(self) -> None:
        self.reader.stop()  # a file's reader waiting for room wakes within 0.5 s and sees it
        with self._lock:
            pending = [job for _, job in self._pending]
        self.hub.runtime.batcher.cancel(pending)
        self._publish(self.detector.interrupt("stream_removed"))

    def scores(self, after: int | None, since: float | None, limit: int) -> dict[str, Any]:
        """stream_parts.page over this camera's records (copies: records are filled in later)."""
        with self._lock:
            return page(self.history, (self.seq_base, self.seq), after, since, limit)

    def quality(self) -> dict[str, Any]:
        st = self.reader.stats
        input_fps = self.input_rate.rate()
        wanted = min(self.spec.fps, input_fps) if self.spec.fps else input_fps
        ratio = self.scored_rate.rate() / wanted if wanted > 0 else None
        recent_trouble = st.last_stall_at is not None and time.monotonic() - st.last_stall_at < 300
        if st.state not in ("up", "ended"):
            grade = "down"
        elif (ratio is not None and ratio < 0.9) or recent_trouble:
            grade = "degraded"
        else:
            grade = "good"
        return {"grade": grade, "scored_to_wanted_fps": None if ratio is None else round(ratio, 3),
                "reconnects": st.reconnects, "stalls": st.stalls,
                "uptime_s": round(time.monotonic() - st.connected_at, 1) if st.connected_at and st.state == "up"
                else 0.0}

    def describe(self, detail: bool = True) -> dict[str, Any]:
        st = self.reader.stats
        out: dict[str, Any] = {
            "id": self.spec.id, "url": redact(self.spec.url), "state": st.state, "fps": self.spec.fps,
            "source_fps": st.source_fps, "input_fps": round(self.input_rate.rate(), 2),
            "scored_fps": round(self.scored_rate.rate(), 2), "quality": self.quality(),
        }
        if detail:
            latest = self.latest
            out |= {
                "frames": {"received": self.received, "sampled": self.sampled, "scored": self.scored,
                           "dropped": dict(self.dropped)},
                "reconnects": st.reconnects, "stalls": st.stalls, "scene_cuts": self.scene_cuts,
                "last_error": st.last_error,
                "state_history": list(st.history), "staleness_s": self.staleness_s if self.live else None,
                "live": self.live, "shedding": self.window.spacing > 1, "shedding_entered": self.shedding.entered,
                "events": self.spec.events.model_dump(), "events_total": self.events_total,
                "active_event": self.detector.active.to_dict() if self.detector.active else None,
                "latest": None if latest is None else {k: v for k, v in latest.items()
                                                       if k not in ("image", "heatmap")},
                "lookahead_frames": self.gap, "smoothing_delay_frames": self.smoothing_delay_frames,
                "anomaly_score": self.current_score(),  # as the gauge: the newest final smoothed score
                "scene": self.scene(), "created_at": self.created, "stored": self.hub.is_stored(self.spec.id),
            }
        return out
