"""One camera's connection: a reader thread that pulls frames from an RTSP/HTTP URL or a file with
open/read timeouts, reconnects with capped exponential backoff, and notices a hung server (a read
that yields nothing for ``stall_timeout_s``). It never blocks another camera: each has its own thread.

A local file is read once, as fast as ``on_frame`` takes its frames (the callback may block to apply
back-pressure; the stall watchdog does not count that time), and then the reader ends ("ended").
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

from model.frames import declared_fps

log = logging.getLogger(__name__)
# user:password@ up to the authority's last "@": a password written with a raw "@" (FFmpeg takes it so)
# must not leave its tail behind
CREDENTIALS = re.compile(r"(?<=://)[^/?#\s]*@")
# secrets that some cameras take in the query string instead (?user=admin&password=...)
SECRET_PARAMS = re.compile(r"(?i)([?&;](?:password|passwd|pwd|pass|token|access_token|auth|authorization|key|"
                           r"api_key|apikey|secret|signature|sig)=)[^&;#\s]*")


_ANCHOR = (time.time(), time.monotonic())


def live_clock() -> float:
    """A live camera's media clock: the unix time when the process started plus the monotonic time
    since. It never steps back: the wall clock can (an NTP step, a VM resumed), and a clock an hour
    behind would hold the frame sampler and the events' cooldown for that hour."""
    return _ANCHOR[0] + (time.monotonic() - _ANCHOR[1])


def redact(url: str) -> str:
    """The URL (or a message holding one) without ``user:password@`` and without the values of
    password-like query parameters (for logs, labels and API responses)."""
    return SECRET_PARAMS.sub(r"\1***", CREDENTIALS.sub("***@", url))


def backoff_wait(attempt: int, first_s: float, cap_s: float) -> float:
    """Seconds to wait before reconnect ``attempt`` (0, 1, ...): ``first_s`` doubling up to ``cap_s``.
    The exponent is bounded, so a camera that stays away for days keeps retrying (2**1024 overflows)."""
    return min(cap_s, first_s * 2.0 ** min(attempt, 64))


@dataclass
class CameraStats:
    state: str = "connecting"  # connecting | up | down | stalled | ended | stopped
    reconnects: int = 0
    stalls: int = 0
    last_frame_at: float | None = None  # time.monotonic() of the latest frame
    last_error: str | None = None
    last_stall_at: float | None = None  # time.monotonic() when the latest stall was noticed
    connected_at: float | None = None
    history: list[str] = field(default_factory=list)  # recent state changes, newest last
    source_fps: float | None = None  # as the source declares it (container or SDP), when it does


class CameraReader:
    """Reads one camera in a daemon thread and hands every frame to ``on_frame(frame_bgr, t_capture,
    t_media)``: the wall-clock time it was read, and its time in the source (the file position for a
    file, :func:`live_clock` for a live stream)."""

    def __init__(self, camera_id: str, url: str, on_frame: Callable[[np.ndarray, float, float], None],
                 stall_timeout_s: float = 10.0, open_timeout_s: float = 5.0,
                 backoff_s: tuple[float, float] = (0.5, 10.0),
                 on_state: Callable[[str, str], None] | None = None, is_file: bool = False) -> None:
        self.camera_id = camera_id
        self.url = url
        self.is_file = is_file
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
        self._in_callback = False  # on_frame is applying back-pressure: not a stall

    def start(self) -> CameraReader:
        self._thread.start()
        self._watchdog.start()
        return self

    def _watch(self) -> None:
        """Notice a hung server within ``stall_timeout_s`` even while a read is still blocked inside
        FFmpeg (which may retry its own timeouts several times before giving up)."""
        while not self._stop.wait(min(0.2, self.stall_timeout_s / 4)):
            last = self.stats.last_frame_at
            silent = time.monotonic() - last if last is not None else 0.0
            if self.stats.state == "up" and silent > self.stall_timeout_s and not self._in_callback:
                self._stall(silent)

    def _stall(self, seconds: float) -> None:
        with self._lock:
            if self.stats.state == "stalled":
                return
            self.stats.stalls += 1
            self.stats.last_stall_at = time.monotonic()
            self._set_state("stalled", f"no frame for {seconds:.1f} s")

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait (e.g. to pace a file) unless told to stop; True when stopping."""
        return self._stop.wait(seconds)

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        self._reconnect_now.set()
        self._thread.join(timeout_s)
        self._watchdog.join(timeout_s)
        if self.stats.state != "ended":
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
            try:
                got_any, ended = self._connect_once()
            except Exception as e:  # a bug or a decoder fault must not end the camera's thread for good
                log.exception("camera %s (%s): reader failed", self.camera_id, redact(self.url))
                self._set_state("down", redact(f"reader failed: {type(e).__name__}: {e}"))
                got_any, ended = False, False
            if ended:
                return
            attempt = 0 if got_any else attempt
            if self._stop.is_set():
                break
            self._reconnect_now.wait(backoff_wait(attempt, *self.backoff_s))
            attempt += 1

    def _connect_once(self) -> tuple[bool, bool]:
        """Open the source and read it until it ends or fails: (any frame arrived, the file has ended)."""
        cap = self._open()
        if cap is None:
            self._set_state("down", f"cannot open {redact(self.url)}")
            return False, False
        try:
            self.stats.source_fps = declared_fps(cap)
            got_any = self._read(cap)
        finally:
            cap.release()
        if self.is_file and got_any and not self._reconnect_now.is_set():
            self._set_state("ended", "end of file")
            return True, True
        return got_any, False

    def _read(self, cap: cv2.VideoCapture) -> bool:
        """Read until the stream ends, stalls or we are told to stop; True if any frame arrived."""
        got_any = False
        last = time.monotonic()
        while not self._stop.is_set() and not self._reconnect_now.is_set():
            ok, frame = cap.read()
            now = time.monotonic()
            t_media = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000 if self.is_file else live_clock()
            if not ok or frame is None:
                if self.is_file and got_any:
                    return True
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
            self.stats.last_frame_at = now
            if self.stats.state == "stalled":  # the watchdog spoke while this read was late (a starved
                self._set_state("up")  # machine, a network hiccup shorter than FFmpeg's timeout): frames flow
            self._in_callback = True
            try:
                self.on_frame(frame, time.time(), t_media)
            finally:
                self._in_callback = False
                self.stats.last_frame_at = time.monotonic()
        return got_any
