"""One camera's connection: a reader thread that pulls frames from an RTSP/HTTP URL or a file with
open/read timeouts, reconnects with capped exponential backoff, and notices a hung server (a read
that yields nothing for ``stall_timeout_s``). It never blocks another camera: each has its own thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)
CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact(url: str) -> str:
    """The URL without ``user:password@`` (for logs, labels and API responses)."""
    return CREDENTIALS.sub("***@", url)


@dataclass
class CameraStats:
    state: str = "connecting"  # connecting | up | down | stalled | stopped
    frames_received: int = 0
    reconnects: int = 0
    stalls: int = 0
    last_frame_at: float | None = None  # time.monotonic() of the latest frame
    last_error: str | None = None
    last_stall_at: float | None = None  # time.monotonic() when the latest stall was noticed
    connected_at: float | None = None
    history: list[str] = field(default_factory=list)  # recent state changes, newest last


class CameraReader:
    """Reads one camera in a daemon thread and hands every frame to ``on_frame(frame_bgr, t_capture)``."""

    def __init__(self, camera_id: str, url: str, on_frame: Callable[[np.ndarray, float], None],
                 stall_timeout_s: float = 10.0, open_timeout_s: float = 5.0,
                 backoff_s: tuple[float, float] = (0.5, 10.0),
                 on_state: Callable[[str, str], None] | None = None) -> None:
        self.camera_id = camera_id
        self.url = url
        self.on_frame = on_frame
        self.on_state = on_state
        self.stall_timeout_s = stall_timeout_s
        self.open_timeout_s = open_timeout_s
        self.backoff_s = backoff_s
        self.stats = CameraStats()
        self._stop = threading.Event()
        self._reconnect_now = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{camera_id}", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name=f"camera-{camera_id}-watchdog", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> CameraReader:
        self._thread.start()
        self._watchdog.start()
        return self

    def _watch(self) -> None:
        """Notice a hung server within ``stall_timeout_s`` even while a read is still blocked inside
        FFmpeg (which may retry its own timeouts several times before giving up)."""
        while not self._stop.wait(min(0.2, self.stall_timeout_s / 4)):
            last = self.stats.last_frame_at
            if self.stats.state == "up" and last is not None and time.monotonic() - last > self.stall_timeout_s:
                self._stall(time.monotonic() - last)

    def _stall(self, seconds: float) -> None:
        with self._lock:
            if self.stats.state == "stalled":
                return
            self.stats.stalls += 1
            self.stats.last_stall_at = time.monotonic()
            self._set_state("stalled", f"no frame for {seconds:.1f} s")

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        self._reconnect_now.set()
        self._thread.join(timeout_s)
        self._watchdog.join(timeout_s)
        self._set_state("stopped")

    def reconnect(self) -> None:
        """Drop the connection and connect again now (skipping any backoff wait)."""
        self._reconnect_now.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _set_state(self, state: str, error: str | None = None) -> None:
        if state != self.stats.state:
            self.stats.state = state
            self.stats.history = [*self.stats.history[-19:], state]
            log.info("camera %s (%s): %s%s", self.camera_id, redact(self.url), state, f" ({error})" if error else "")
            if self.on_state is not None:
                self.on_state(self.camera_id, state)
        if error:
            self.stats.last_error = error

    def _open(self) -> cv2.VideoCapture | None:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.stall_timeout_s * 1000)]
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _run(self) -> None:
        attempt = 0
        first = True
        while not self._stop.is_set():
            if not first:
                self.stats.reconnects += 1
            first = False
            self._reconnect_now.clear()
            cap = self._open()
            if cap is None:
                self._set_state("down", f"cannot open {redact(self.url)}")
            else:
                attempt = 0 if self._read(cap) else attempt
                cap.release()
            if self._stop.is_set():
                break
            wait = min(self.backoff_s[1], self.backoff_s[0] * 2**attempt)
            attempt += 1
            self._reconnect_now.wait(wait)

    def _read(self, cap: cv2.VideoCapture) -> bool:
        """Read until the stream ends, stalls or we are told to stop; True if any frame arrived."""
        got_any = False
        last = time.monotonic()
        while not self._stop.is_set() and not self._reconnect_now.is_set():
            ok, frame = cap.read()
            now = time.monotonic()
            if not ok or frame is None:
                if now - last >= self.stall_timeout_s * 0.9:
                    self._stall(now - last)
                elif self.stats.state != "stalled":
                    self._set_state("down", "stream ended or connection lost")
                return got_any
            if not got_any:
                self.stats.connected_at = now
                self._set_state("up")
            got_any = True
            last = now
            self.stats.frames_received += 1
            self.stats.last_frame_at = now
            self.on_frame(frame, time.time())
        return got_any
