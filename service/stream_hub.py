"""The registry of cameras (add, list, remove, reconnect), their Prometheus series, the event fan-out
(bus and webhook) and the pictures operators look at (MJPEG preview frames, event snapshots)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from model.calibration import SCENE_CHECK_FRAMES
from model.errors import AedmaeError
from model.overlay import caption, draw_regions, overlay_heatmap
from model.regions import ALERT_REGIONS, Region, hot_regions
from service.camera_store import CameraStore
from service.errors import BadRequest, Conflict, NotFound, Overloaded, StoreFailed
from service.events import Event, EventBus, WebhookSender
from service.metrics import Metrics
from service.settings import Settings, StreamSpec
from service.streams import DROP_REASONS, Stream

log = logging.getLogger(__name__)
PREVIEW_WIDTH = 640


def render(image: np.ndarray, heatmap: np.ndarray, vmax: float, text: str, alert: bool,
           regions: Sequence[Region] = ()) -> bytes:
    """A model-size frame with its heatmap, boxes round ``regions`` and a caption, upscaled for people, as JPEG."""
    picture = overlay_heatmap(image, heatmap, vmax)
    h, w = picture.shape[:2]
    if w < PREVIEW_WIDTH:
        picture = cv2.resize(picture, (PREVIEW_WIDTH, round(h * PREVIEW_WIDTH / w)), interpolation=cv2.INTER_LINEAR)
    picture = draw_regions(picture, regions)
    picture = caption(picture, text, alert, scale=picture.shape[1] / 320)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return jpeg.tobytes()


class StreamManager:
    def __init__(self, runtime: Any, settings: Settings, metrics: Metrics) -> None:
        self.runtime, self.settings, self.metrics = runtime, settings, metrics
        self.bus = EventBus()
        self.webhook = (WebhookSender(settings.webhook_url, settings.webhook_timeout_s, settings.webhook_retries,
                                      lambda outcome: metrics.webhook_deliveries.labels(outcome=outcome).inc(),
                                      ca_file=settings.webhook_ca_file)
                        if settings.webhook_url else None)
        self._streams: dict[str, Stream] = {}
        self._lock = threading.Lock()
        self._store = CameraStore(settings.camera_store) if settings.camera_store else None
        self._stored: dict[str, StreamSpec] = {}  # registered through the API: what the store holds
        self._collector = StreamCollector(self)
        metrics.registry.register(self._collector)

    # -- registry ----------------------------------------------------------------------------------
    def add(self, spec: StreamSpec, store: bool = False) -> Stream:
        """Register and start a camera. ``store`` (API registrations): keep it in the camera store too,
        written before the camera starts, so a registration that cannot be stored changes nothing."""
        self._check_file(spec)
        path = spec.file_path
        if path is not None and not path.is_absolute():  # the camera store must not depend on the cwd
            spec = spec.model_copy(update={"url": str(path.resolve())})

        def keep() -> None:
            if spec.id in self._stored:
                raise Conflict(f"camera {spec.id!r} is in the camera store but could not start: DELETE it first")
            if store and self._store is not None:
                self._save({**self._stored, spec.id: spec})
                self._stored[spec.id] = spec

        return self._start(spec, keep)

    def restore(self, specs: list[StreamSpec]) -> None:
        """Start the cameras read from the camera store (after the config file's). One that cannot start
        (its file is gone, files are no longer allowed, a config-file camera has its id) is logged and
        stays in the store until DELETE removes it."""
        with self._lock:
            self._stored.update((s.id, s) for s in specs)
        if self._store is not None:
            log.info("camera store %s: %d camera(s)", self._store.path, len(specs))
        for spec in specs:
            try:
                self._check_file(spec)
                self._start(spec)
            except AedmaeError as e:
                log.error("camera %s from the camera store not started: %s (DELETE /v1/streams/%s forgets it)",
                          spec.id, e, spec.id)

    def _start(self, spec: StreamSpec, before: Callable[[], None] | None = None) -> Stream:
        with self._lock:
            if spec.id in self._streams:
                raise Conflict(f"camera {spec.id!r} already exists: DELETE it first to change it")
            if len(self._streams) >= self.settings.max_streams:
                raise Overloaded(f"{len(self._streams)} cameras are registered (max_streams)")
            if before is not None:
                before()
            stream = self._streams[spec.id] = Stream(spec, self)
        stream.start()
        return stream

    def _save(self, stored: dict[str, StreamSpec]) -> None:
        assert self._store is not None
        try:
            self._store.save(list(stored.values()))
        except OSError as e:
            raise StoreFailed(f"cannot write the camera store {self._store.path} ({e.strerror or e}); "
                              "nothing changed") from None

    def _check_file(self, spec: StreamSpec) -> None:
        path = spec.file_path
        if path is not None:
            if not self.settings.allow_file_streams:
                raise BadRequest("local files are not allowed as cameras here (allow_file_streams=false)")
            try:
                found = path.is_file()
            except OSError as e:  # a name too long, a path through a file, ...
                raise BadRequest(f"not a usable file path: {e.strerror}") from None
            if not found:
                raise BadRequest(f"no such video file: {path}")

    def get(self, stream_id: str) -> Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise NotFound(f"no camera {stream_id!r}")
        return stream

    def is_stored(self, stream_id: str) -> bool:
        """Whether the camera store keeps this camera across restarts."""
        return stream_id in self._stored

    def has(self, stream: Stream) -> bool:
        return self._streams.get(stream.spec.id) is stream

    def list(self) -> list[Stream]:
        with self._lock:
            return list(self._streams.values())

    def remove(self, stream_id: str) -> None:
        """Stop the camera (blocking until its reader ends, at most its timeouts) and forget it, in the
        camera store too (written first: a removal that cannot be stored changes nothing)."""
        with self._lock:
            if stream_id not in self._streams and stream_id not in self._stored:
                raise NotFound(f"no camera {stream_id!r}")
            if stream_id in self._stored:
                self._save({k: v for k, v in self._stored.items() if k != stream_id})
                del self._stored[stream_id]
        self._detach(stream_id)

    def _detach(self, stream_id: str) -> None:
        """Stop a camera and drop its series; the camera store keeps it (server shutdown)."""
        with self._lock:
            stream = self._streams.pop(stream_id, None)
        if stream is None:  # stored, but it could not start
            return
        stream.stop()
        with contextlib.suppress(KeyError):  # a camera that never scored a frame has no series
            self.metrics.frame_age.remove(stream_id)

    def stop(self) -> None:
        streams = self.list()
        threads = [threading.Thread(target=self._detach, args=(s.spec.id,), daemon=True) for s in streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        if self.webhook is not None:
            self.webhook.close()
        self.metrics.registry.unregister(self._collector)

    # -- results -----------------------------------------------------------------------------------
    def observe_frame(self, stream_id: str, age_s: float, calibrated: float) -> None:
        self.metrics.frame_age.labels(stream=stream_id).observe(age_s)
        self.metrics.score_distribution.labels(source="stream").observe(calibrated)

    def publish(self, kind: str, event: Event) -> None:
        if kind == "end" and isinstance(event.snapshot, tuple):
            event.snapshot = self.snapshot_jpeg(event)  # keep a small JPEG, not the arrays
        _, _, body = self.bus.publish(kind, event)
        log.info("event %s %s: camera %s, peak %.3f at frame %d", kind, event.id, event.stream, event.peak_score,
                 event.peak_frame)
        if self.webhook is not None:
            self.webhook.send(kind, body)

    # -- pictures ----------------------------------------------------------------------------------
    def snapshot_jpeg(self, event: Event) -> bytes:
        if isinstance(event.snapshot, bytes):
            return event.snapshot
        frame, heatmap = event.snapshot
        return render(frame, heatmap, self.runtime.heatmap_scale, f"{event.stream} event peak {event.peak_score:.2f}",
                      alert=True, regions=event.regions)

    def preview_jpeg(self, stream: Stream) -> bytes | None:
        """The camera's newest scored frame as people see it; rendered once (about 2.5 ms) for however
        many viewers watch it, again only when the frame, its caption or the event state changes."""
        latest = stream.latest
        if latest is None:
            return None
        score = stream.current_score()
        active = stream.detector.active is not None
        state = latest["invalid_reason"] or ("EVENT" if active else "")
        text = f"{stream.spec.id} #{latest['frame']} score {score:.2f} {state}".rstrip()
        cached = stream.preview_cache
        if cached is not None and cached[0] is latest and cached[1:3] == (text, active):
            return cached[3]
        regions = hot_regions(latest["heatmap"], ALERT_REGIONS) if active else []
        jpeg = render(latest["image"], latest["heatmap"], self.runtime.heatmap_scale, text, active, regions)
        stream.preview_cache = (latest, text, active, jpeg)
        return jpeg


class StreamCollector(Collector):
    """Per-camera series read from the cameras at scrape time (a removed camera's series go with it)."""

    def __init__(self, manager: StreamManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Any]:
        p = "aedmae"
        up = GaugeMetricFamily(f"{p}_stream_up", "1 while the camera delivers frames", labels=["stream"])
        frames = CounterMetricFamily(f"{p}_stream_frames", "camera frames by stage (received, sampled, scored)",
                                     labels=["stream", "stage"])
        dropped = CounterMetricFamily(f"{p}_stream_frames_dropped", "camera frames dropped unscored, by reason",
                                      labels=["stream", "reason"])
        reconnects = CounterMetricFamily(f"{p}_stream_reconnects", "reconnection attempts", labels=["stream"])
        stalls = CounterMetricFamily(f"{p}_stream_stalls", "stalls noticed (no frame for stall_timeout_s)",
                                     labels=["stream"])
        cuts = CounterMetricFamily(f"{p}_stream_scene_cuts", "scene cuts noticed (the picture changed at once: "
                                   "another camera or preset; the window and any open event restart)",
                                   labels=["stream"])
        score = GaugeMetricFamily(f"{p}_anomaly_score", "latest smoothed calibrated anomaly score", labels=["stream"])
        events = CounterMetricFamily(f"{p}_anomaly_events", "anomaly events started", labels=["stream"])
        share = GaugeMetricFamily(f"{p}_stream_alert_share", "share of the camera's recent frames at or above the "
                                  "alert threshold, once enough are scored; near 1: the model does not fit the scene "
                                  "(model.calibration.scene_check)", labels=["stream"])
        for s in self.manager.list():
            sid, st = s.spec.id, s.reader.stats
            up.add_metric([sid], 1.0 if st.state == "up" else 0.0)
            for stage, n in (("received", s.received), ("sampled", s.sampled), ("scored", s.scored)):
                frames.add_metric([sid, stage], n)
            for reason in DROP_REASONS:
                dropped.add_metric([sid, reason], s.dropped[reason])
            reconnects.add_metric([sid], st.reconnects)
            stalls.add_metric([sid], st.stalls)
            cuts.add_metric([sid], s.scene_cuts)
            current = s.current_score()
            if current is not None:
                score.add_metric([sid], current)
            events.add_metric([sid], s.events_total)
            scene = s.scene()
            if scene["frames"] >= SCENE_CHECK_FRAMES:
                share.add_metric([sid], scene["alert_share"])
        yield from (up, frames, dropped, reconnects, stalls, cuts, score, events, share)
