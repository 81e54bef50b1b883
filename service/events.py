"""Anomaly events: alert hysteresis over a camera's smoothed scores, the bus that fans events out to
Server-Sent-Event clients, and the webhook sender.

An event starts when the smoothed calibrated score has stayed at or above ``enter`` for
``min_duration_s`` (of the camera's own clock) and ends when it has stayed below ``exit`` for as long;
no new event starts within ``cooldown_s`` of the last end. A gap in the stream (disconnect, stall,
end of file) or an invalid frame (frozen or blank picture) ends an open event at once and restarts
the count: no event spans a gap, and none starts from a frozen or covered camera.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.regions import ALERT_REGIONS, Region, hot_regions
from service.settings import EventSettings

log = logging.getLogger(__name__)
EPS = 1e-6  # clock comparisons: 0.7 - 0.4 is 0.29999999999999993 in floating point


@dataclass
class Event:
    id: str
    stream: str
    start_time: float  # unix time of the first frame at or above `enter` (capture time)
    start_frame: int
    peak_score: float
    peak_frame: int
    end_time: float | None = None
    end_frame: int | None = None
    end_reason: str | None = None  # "score" | "gap" | "cut" | "invalid_input" | "stream_removed" | "shed"
    snapshot: Any = field(default=None, repr=False)  # (frame, heatmap) at the peak, or encoded JPEG bytes
    regions: list[Region] = field(default_factory=list, repr=False)  # the peak frame's hottest regions

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "stream": self.stream, "start_time": self.start_time, "start_frame": self.start_frame,
                "end_time": self.end_time, "end_frame": self.end_frame, "end_reason": self.end_reason,
                "peak_score": round(self.peak_score, 6), "peak_frame": self.peak_frame,
                "active": self.end_time is None, "snapshot": f"/v1/events/{self.id}/snapshot.jpg",
                "peak_regions": [r.to_dict() for r in self.regions]}

    def set_peak(self, score: float, frame: int, snapshot: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.peak_score, self.peak_frame, self.snapshot = score, frame, snapshot
        self.regions = hot_regions(snapshot[1], ALERT_REGIONS) if snapshot is not None else []


class EventDetector:
    """Hysteresis for one camera. ``update`` takes each scored frame in order and returns the events
    that started or ended with it, as ("start" | "end", event)."""

    def __init__(self, stream: str, settings: EventSettings) -> None:
        self.stream = stream
        self.s = settings
        self.active: Event | None = None
        self._above_since: tuple[float, float, int] | None = None  # (media t, unix t, frame) of the run's start
        self._below_since: float | None = None
        self._cooldown_until = float("-inf")
        self._last: tuple[float, int] = (0.0, -1)  # (unix time, frame) of the last valid frame

    def update(self, frame: int, t_media: float, t_unix: float, smoothed: float | None,
               snapshot: tuple[np.ndarray, np.ndarray] | None = None) -> list[tuple[str, Event]]:
        """``smoothed`` is None for an invalid frame (frozen/blank picture)."""
        if smoothed is None:
            return self.interrupt("invalid_input")
        out: list[tuple[str, Event]] = []
        self._last = (t_unix, frame)
        if self.active is not None:
            ev = self.active
            if smoothed > ev.peak_score:
                ev.set_peak(smoothed, frame, snapshot)
            if smoothed < self.s.exit:
                self._below_since = t_media if self._below_since is None else self._below_since
                if t_media - self._below_since >= self.s.min_duration_s - EPS:
                    out.append(("end", self._end("score", t_unix, frame, t_media)))
            else:
                self._below_since = None
            return out
        if smoothed < self.s.enter or t_media < self._cooldown_until - EPS:
            self._above_since = None
            return out
        if self._above_since is None:
            self._above_since = (t_media, t_unix, frame)
        if t_media - self._above_since[0] >= self.s.min_duration_s - EPS:
            _, start_unix, start_frame = self._above_since
            self.active = Event(uuid.uuid4().hex[:16], self.stream, start_unix, start_frame, smoothed, frame)
            self.active.set_peak(smoothed, frame, snapshot)
            self._above_since = self._below_since = None
            out.append(("start", self.active))
        return out

    def interrupt(self, reason: str) -> list[tuple[str, Event]]:
        """A gap or an invalid frame: end the open event (at the last good frame) and restart counting."""
        self._above_since = self._below_since = None
        if self.active is None:
            return []
        return [("end", self._end(reason, *self._last, None))]

    def _end(self, reason: str, t_unix: float, frame: int, t_media: float | None) -> Event:
        ev = self.active
        assert ev is not None
        ev.end_time, ev.end_frame, ev.end_reason = t_unix, frame, reason
        self.active = None
        self._below_since = None
        if t_media is not None:
            self._cooldown_until = t_media + self.s.cooldown_s
        return ev


class EventBus:
    """Keeps recent events and hands each start/end to every SSE subscriber (asyncio queues fed from
    worker threads). A subscriber that does not keep up loses messages, never the server's memory.
    The ``keep`` recent events (each with its snapshot) are shared fairly: when full, the camera with the
    most events loses its oldest, so a camera that raises events all night cannot push out the one
    event a quiet camera had."""

    def __init__(self, keep: int = 500, subscriber_queue: int = 256) -> None:
        self.keep = keep
        self.recent: list[Event] = []  # oldest first
        self.log: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=keep)  # (seq, kind, event) for replay
        # ids go on from one life of the server to the next (they start at its start time in ms; events
        # are far rarer than 1,000 a second), so a browser's Last-Event-ID from before a restart replays
        # the new life's events instead of skipping as many of them
        self._seq = itertools.count(time.time_ns() // 1_000_000)
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[tuple[int, str, dict[str, Any]]]]] = set()
        self._queue_size = subscriber_queue
        self._lock = threading.Lock()

    def publish(self, kind: str, event: Event) -> tuple[int, str, dict[str, Any]]:
        with self._lock:
            if kind == "start":
                self._keep(event)
            message = (next(self._seq), kind, event.to_dict())
            self.log.append(message)
            subscribers = list(self._subscribers)
        for loop, q in subscribers:
            loop.call_soon_threadsafe(_offer, q, message)
        return message

    def _keep(self, event: Event) -> None:
        self.recent.append(event)
        if len(self.recent) > self.keep:
            counts = Counter(e.stream for e in self.recent)
            busiest = max(counts, key=lambda s: (counts[s], s == event.stream))  # ties: the newcomer's camera
            self.recent.remove(next(e for e in self.recent if e.stream == busiest))

    def events_of(self, stream: str) -> list[Event]:
        with self._lock:
            return [e for e in self.recent if e.stream == stream]

    def find(self, event_id: str) -> Event | None:
        with self._lock:
            return next((e for e in self.recent if e.id == event_id), None)

    def subscribe(self, after: int = 0) -> asyncio.Queue[tuple[int, str, dict[str, Any]]]:
        """A queue of (seq, kind, event) for the running loop, first replaying messages after ``after``.
        An ``after`` beyond the newest id (a clock stepped back across a restart) replays all that is kept."""
        q: asyncio.Queue[tuple[int, str, dict[str, Any]]] = asyncio.Queue(self._queue_size)
        with self._lock:
            if after > (self.log[-1][0] if self.log else 0):
                after = 0
            for message in self.log:
                if message[0] > after:
                    _offer(q, message)
            self._subscribers.add((asyncio.get_running_loop(), q))
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[int, str, dict[str, Any]]]) -> None:
        with self._lock:
            self._subscribers = {s for s in self._subscribers if s[1] is not q}

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def _offer(q: asyncio.Queue[tuple[int, str, dict[str, Any]]], message: tuple[int, str, dict[str, Any]]) -> None:
    if q.full():
        q.get_nowait()  # the oldest goes: a slow client sees a gap in `id`, the server stays bounded
    q.put_nowait(message)


def _final(error: Exception) -> bool:
    """A status that sending again will not change: a 4xx other than 408 and 429 (a wrong URL or
    credentials, a receiver that rejects the message). Retrying it only delays the messages behind."""
    return isinstance(error, urllib.error.HTTPError) and 400 <= error.code < 500 and error.code not in (408, 429)


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its ``user:password@`` and the Authorization header that carries them instead."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
    netloc = parts.netloc.rsplit("@", 1)[1]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


class WebhookSender:
    """POSTs each event message as JSON to one URL from a background thread, with a timeout and
    retries (exponential backoff; none after a 4xx other than 408 and 429). A full backlog drops its
    oldest message, as the SSE queues do: a receiver back from an outage hears about what is happening
    now, not about the first hour of it. Outcomes are counted. A user and password in the URL are sent
    as HTTP Basic auth (urllib would take them for the host)."""

    def __init__(self, url: str, timeout_s: float, retries: int, on_outcome: Any, backlog: int = 1000,
                 ca_file: str | os.PathLike[str] | None = None) -> None:
        self.url, self.headers = _split_credentials(url)
        # an https receiver is verified against ca_file's certificates when given, else the system's
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.timeout_s, self.retries = timeout_s, retries
        self.on_outcome = on_outcome  # called with "delivered" | "failed" | "dropped"
        self._backlog: deque[dict[str, Any]] = deque()
        self._capacity = backlog
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="aedmae-webhook", daemon=True)
        self._thread.start()

    def send(self, kind: str, event: dict[str, Any]) -> None:
        with self._ready:
            full = len(self._backlog) >= self._capacity
            if full:
                self._backlog.popleft()
            self._backlog.append({"type": kind, "event": event})
            self._ready.notify()
        if full:
            self.on_outcome("dropped")

    def close(self, timeout_s: float = 5.0) -> None:
        """Delivers what is queued (within ``timeout_s``), then stops the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout_s)

    def _next(self) -> dict[str, Any] | None:
        with self._ready:
            while not self._backlog and not self._closing:
                self._ready.wait()
            return self._backlog.popleft() if self._backlog else None

    def _run(self) -> None:
        while (message := self._next()) is not None:
            body = json.dumps(message).encode()
            for attempt in range(self.retries + 1):
                try:
                    request = urllib.request.Request(self.url, body, method="POST", headers={
                        "Content-Type": "application/json", "X-Aedmae-Event": message["type"], **self.headers})
                    with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.context) as response:
                        response.read()
                    self.on_outcome("delivered")
                    break
                except Exception as e:  # a refusal, a timeout or an error status: retry, then give up
                    if attempt == self.retries or _final(e):
                        log.warning("webhook: giving up on event %s after %d attempt(s): %s",
                                    message["event"]["id"], attempt + 1, e)
                        self.on_outcome("failed")
                        break
                    time.sleep(min(8.0, 0.5 * 2**attempt))
