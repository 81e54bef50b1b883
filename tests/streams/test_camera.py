"""A camera reader against a real RTSP server: frames flow, the server dies and returns, the server hangs;
and, on scripted captures, files, back-pressure, backoff and stalls."""

import itertools
import logging
import threading
import time

import numpy as np

from service.camera import CameraReader, backoff_wait, redact
from tests.conftest import wait_for


class Sink:
    def __init__(self):
        self.frames = 0
        self.shapes = set()
        self.lock = threading.Lock()

    def __call__(self, frame, t_capture, t_media):
        with self.lock:
            self.frames += 1
            self.shapes.add(frame.shape)


def test_frames_flow_from_a_real_rtsp_server(rtsp_server):
    sink = Sink()
    reader = CameraReader("gate", rtsp_server.url, sink, stall_timeout_s=5).start()
    try:
        assert wait_for(lambda: sink.frames >= 25, 20), reader.stats
        assert reader.stats.state == "up" and reader.stats.reconnects == 0
        assert len(sink.shapes) == 1 and next(iter(sink.shapes))[2] == 3
    finally:
        reader.stop()
    assert not reader.alive and reader.stats.state == "stopped"


def test_server_killed_then_back_reconnects_by_itself(rtsp_server):
    sink = Sink()
    reader = CameraReader("gate", rtsp_server.url, sink, stall_timeout_s=3, backoff_s=(0.2, 1.0)).start()
    try:
        assert wait_for(lambda: sink.frames >= 10, 20)
        rtsp_server.kill()
        assert wait_for(lambda: reader.stats.state in ("down", "stalled"), 10), reader.stats
        time.sleep(1.5)  # a few failed reconnects while the server is away
        assert reader.stats.reconnects >= 1
        rtsp_server.start()  # same port
        before = sink.frames
        assert wait_for(lambda: reader.stats.state == "up" and sink.frames > before + 10, 30), reader.stats
    finally:
        reader.stop()


def test_hung_server_is_noticed_within_the_stall_timeout(rtsp_server):
    sink = Sink()
    reader = CameraReader("gate", rtsp_server.url, sink, stall_timeout_s=2, backoff_s=(0.2, 1.0)).start()
    try:
        assert wait_for(lambda: sink.frames >= 10, 20)
        rtsp_server.pause()
        # frames already in flight still arrive after the server hangs (on a busy machine even after a
        # first stall was noticed, which they end); from the last one on, the stall must be noticed
        # within the timeout plus the watchdog's 0.2 s check period (and 0.8 s for a busy machine)
        st = reader.stats
        assert wait_for(lambda: st.state == "stalled" and st.last_stall_at > st.last_frame_at, 20), st
        noticed_after = st.last_stall_at - st.last_frame_at
        assert 2 <= noticed_after <= 2 + 1.0, noticed_after
    finally:
        rtsp_server.resume()
        reader.stop()


def test_failed_first_connect_is_down_and_stoppable(caplog):
    caplog.set_level(logging.INFO)
    # a password with a raw "@" (FFmpeg reads up to the last one), and one more in the query string
    reader = CameraReader("nowhere", "rtsp://admin:hun@ter2@127.0.0.1:9/cam?channel=1&pwd=hunter3",
                          lambda f, t, m: None, open_timeout_s=1, backoff_s=(0.1, 0.5)).start()
    assert wait_for(lambda: reader.stats.state == "down", 10)
    reader.stop()
    assert not reader.alive
    assert "hun" not in caplog.text and "hunter3" not in caplog.text
    assert "rtsp://***@127.0.0.1:9/cam?channel=1&pwd=***" in caplog.text
    assert "hun" not in reader.stats.last_error and "ter2" not in reader.stats.last_error


class LateCapture:
    """A capture whose fourth read takes ``late_s`` (the reader thread starved, or a network hiccup
    shorter than FFmpeg's own read timeout) and then delivers frames again."""

    def __init__(self, late_s: float, frames: int = 8):
        self.late_s, self.frames, self.reads = late_s, frames, 0

    def read(self):
        self.reads += 1
        if self.reads == 4:
            time.sleep(self.late_s)
        if self.reads > self.frames:
            return False, None
        return True, np.zeros((4, 4, 3), np.uint8)

    def get(self, prop):
        return 0.0


def test_frames_after_a_noticed_stall_bring_the_camera_back_up():
    sink = Sink()
    reader = CameraReader("gate", "rtsp://cam.local/x", sink, stall_timeout_s=0.5)
    reader._watchdog.start()
    try:
        assert reader._read(LateCapture(late_s=1.2))
    finally:
        reader._stop.set()
        reader._watchdog.join(5)
    assert sink.frames == 8 and reader.stats.stalls == 1, reader.stats
    assert reader.stats.history[:3] == ["up", "stalled", "up"], reader.stats.history  # not stuck "stalled"


class Capture(LateCapture):
    """A capture that delivers ``frames`` frames without delay, then ends; releasing it is counted."""

    released = 0

    def __init__(self, frames: int = 8):
        super().__init__(late_s=0.0, frames=frames)

    def isOpened(self):
        return True

    def release(self):
        Capture.released += 1


def _file_reader(handler, frames=12, stall_timeout_s=10.0):
    reader = CameraReader("clip", "/clips/door.mp4", handler, stall_timeout_s=stall_timeout_s,
                          backoff_s=(0.01, 0.05), is_file=True)
    reader._open = lambda: Capture(frames)
    return reader


def test_a_file_is_read_once_to_its_end_and_stays_ended():
    sink = Sink()
    reader = _file_reader(sink).start()
    assert wait_for(lambda: not reader.alive, 10)
    reader.stop()
    assert sink.frames == 12 and reader.stats.history == ["up", "ended"] and reader.stats.state == "ended"


def test_a_file_told_to_reconnect_reads_again_from_its_start():
    frames = []

    def handler(frame, t_capture, t_media):
        frames.append(frame)
        if len(frames) == 5:
            reader.reconnect()

    reader = _file_reader(handler)  # bound before its thread calls the handler
    reader.start()
    assert wait_for(lambda: not reader.alive, 10)
    reader.stop()
    assert len(frames) == 5 + 12 and reader.stats.reconnects == 1 and reader.stats.history == ["up", "ended"]


def test_a_slow_frame_handler_is_back_pressure_not_a_stall():
    """The scorer holding a file's frame for 0.8 s (twice the stall timeout) is not a hung source."""
    def handler(frame, t_capture, t_media):
        if handler.calls == 2:
            time.sleep(0.8)
        handler.calls += 1

    handler.calls = 0
    reader = _file_reader(handler, stall_timeout_s=0.4).start()
    assert wait_for(lambda: not reader.alive, 10)
    reader.stop()
    assert handler.calls == 12 and reader.stats.stalls == 0 and "stalled" not in reader.stats.history


def test_backoff_starts_again_after_a_connection_that_delivered_frames(monkeypatch):
    """Two failed connects wait backoff 0 then 1; a connection that delivered frames resets it."""
    import service.camera as camera_mod

    reader = CameraReader("gate", "rtsp://cam.local/x", lambda f, t, m: None)
    results = iter([(False, False), (False, False), (True, False), (False, False)])

    def connect_once():
        result = next(results, None)
        if result is None:
            reader._stop.set()
        return result or (False, False)

    attempts = []
    reader._connect_once = connect_once
    monkeypatch.setattr(camera_mod, "backoff_wait", lambda attempt, first, cap: attempts.append(attempt) or 0.0)
    reader._run()
    assert attempts == [0, 1, 0, 1] and reader.stats.reconnects == 4


def test_a_stall_is_counted_once_and_the_state_history_keeps_the_latest_20():
    reader = CameraReader("gate", "rtsp://cam.local/x", lambda f, t, m: None)
    reader._set_state("up")
    reader._stall(11.0)
    reader._stall(12.0)  # the watchdog and the late read both notice it
    assert reader.stats.stalls == 1 and reader.stats.last_error == "no frame for 11.0 s"
    for state in ["up", "down"] * 15:
        reader._set_state(state)
    assert len(reader.stats.history) == 20 and reader.stats.history[-2:] == ["up", "down"]


def test_backoff_doubles_to_its_cap_and_never_overflows():
    assert [backoff_wait(a, 0.5, 10.0) for a in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_wait(10**6, 0.5, 10.0) == 10.0  # a camera away for days: 2.0 ** 1024 would overflow


def test_camera_away_for_thousands_of_attempts_keeps_trying():
    """Each failed open doubles the wait (to its cap); after 1,024 of them (about 2.8 hours at the
    default 10 s cap) the exponent overflowed and the reader thread died for good."""
    reader = CameraReader("gate", "rtsp://cam.local/x", lambda f, t, m: None, backoff_s=(1e-7, 1e-6))
    reader._open = lambda: None
    reader.start()
    try:
        assert wait_for(lambda: reader.stats.reconnects > 1200 or not reader.alive, 60)
        assert reader.alive and reader.stats.state == "down", reader.stats
    finally:
        reader.stop()
    assert not reader.alive


def test_a_failing_frame_handler_reconnects_instead_of_ending_the_camera(caplog):
    """An exception out of the frame handler (a bug, a decoder fault) used to end the reader thread
    silently: the camera stayed registered and never delivered a frame again. Now it is logged, the
    camera goes down with the reason, the capture is released, and the reader reconnects."""
    calls = []

    def handler(frame, t_capture, t_media):
        calls.append(frame.shape)
        if len(calls) == 3:
            raise RuntimeError("boom")

    Capture.released = 0
    reader = CameraReader("gate", "rtsp://cam.local/x", handler, backoff_s=(0.01, 0.05))
    reader._open = lambda: Capture()
    with caplog.at_level(logging.ERROR):
        reader.start()
        try:
            assert wait_for(lambda: len(calls) >= 20, 10), (len(calls), reader.stats)
        finally:
            reader.stop()
    assert "reader failed" in caplog.text and "RuntimeError: boom" in caplog.text  # with its traceback
    assert reader.stats.reconnects >= 2 and Capture.released >= 2
    assert "down" in reader.stats.history and reader.stats.history[-1] == "stopped"


def test_live_media_time_never_steps_back_with_the_wall_clock(monkeypatch):
    """The wall clock steps back an hour in the middle of a live stream (an NTP correction, a VM
    resumed). The media time the stream samples frames and times events by must keep going forward:
    an hour back, the sampler would skip every frame and the events' cooldown hold for that hour."""
    start, real_monotonic = time.time(), time.monotonic
    m0 = real_monotonic()

    class SteppedCapture(Capture):
        step = 0.0

        def read(self):
            if self.reads == 4:
                SteppedCapture.step = -3600.0
            return super().read()

    monkeypatch.setattr("service.camera.time.time", lambda: start + real_monotonic() - m0 + SteppedCapture.step)
    seen = []
    reader = CameraReader("gate", "rtsp://cam.local/x", lambda f, t, m: seen.append((t, m)))
    assert reader._read(SteppedCapture())
    wall, media = zip(*seen, strict=True)
    assert len(media) == 8 and min(b - a for a, b in itertools.pairwise(wall)) < -3000  # the wall clock did step
    assert all(b >= a for a, b in itertools.pairwise(media)), media
    assert abs(media[0] - start) < 60  # still about the unix time


def test_redact():
    assert redact("rtsp://user:pa:ss@cam.local:554/x") == "rtsp://***@cam.local:554/x"
    assert redact("rtsp://cam.local/x") == "rtsp://cam.local/x"
    assert redact("rtsp://admin:p@ss@cam/x") == "rtsp://***@cam/x"  # not "***@ss@cam": the password's tail
    assert redact("rtsp://admin:p%40ss@[::1]:554/x") == "rtsp://***@[::1]:554/x"
    assert redact("http://cam/x?user=a&Password=b&channel=1#f") == "http://cam/x?user=a&Password=***&channel=1#f"
    assert redact("rtsp://cam/live?token=abc;key=def&keyframe=1") == "rtsp://cam/live?token=***;key=***&keyframe=1"
    message = "down: cannot open rtsp://u:p@cam/x?pass=1 (timeout)"  # a URL inside an error message
    assert redact(message) == "down: cannot open rtsp://***@cam/x?pass=*** (timeout)"
    assert redact("/footage/cam@gate/day1.mp4") == "/footage/cam@gate/day1.mp4"  # a file path keeps its "@"
    assert redact("file:///footage/cam@gate.mp4") == "file:///footage/cam@gate.mp4"
