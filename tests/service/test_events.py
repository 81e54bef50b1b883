"""Event hysteresis, sampling, validity, the SSE bus and the webhook sender (real HTTP on
loopback)."""

import asyncio
import base64
import json
import random
import threading
import time
from typing import ClassVar

import numpy as np
import pytest

from service.events import Event, EventBus, EventDetector, WebhookSender
from service.settings import EventSettings, StreamSpec
from service.stream_parts import RateMeter, Sampler, Shedding, Validity, page
from tests.conftest import QuietHandler, http_server, wait_for


def run(detector, scores, fps=10.0, start=0):
    """Feed smoothed scores at `fps`; returns [(kind, frame)] and the events."""
    out, events = [], []
    for i, s in enumerate(scores, start):
        for kind, ev in detector.update(i, i / fps, 1000 + i / fps, s):
            out.append((kind, i))
            events.append(ev)
    return out, events


def test_event_needs_min_duration_above_enter_and_ends_below_exit():
    d = EventDetector("cam", EventSettings(enter=0.7, exit=0.5, min_duration_s=0.3, cooldown_s=0))
    # a 2-frame blip (0.1 s) does not start an event; a long run does, 0.3 s after it began
    scores = [0.2, 0.9, 0.9, 0.2, 0.8, 0.8, 0.8, 0.8, 0.9, 0.6, 0.6, 0.4, 0.4, 0.4, 0.4, 0.2]
    marks, events = run(d, scores)
    assert marks == [("start", 7), ("end", 14)]
    ev = events[0]
    assert ev.start_frame == 4 and ev.peak_frame == 8 and ev.peak_score == 0.9
    assert ev.end_reason == "score" and ev.end_frame == 14 and ev.start_time == pytest.approx(1000.4)


def test_dips_below_exit_shorter_than_min_duration_each_do_not_end_an_event():
    """At 10 frames/s: two dips below exit of three frames (0.2 s from first to last), between scores
    above it: neither lasts min_duration_s (0.3 s), so the event stays open (a dip's clock restarts when
    the score comes back; counted from the first dip, it would end at frame 13); the third dip, long
    enough, ends it 0.3 s after it began."""
    d = EventDetector("cam", EventSettings(enter=0.7, exit=0.5, min_duration_s=0.3, cooldown_s=0))
    scores = [0.8] * 7 + [0.4] * 3 + [0.6] * 3 + [0.4] * 3 + [0.6] * 2 + [0.4] * 8
    marks, _ = run(d, scores)
    assert marks == [("start", 3), ("end", 21)]


def test_event_regions_are_those_of_its_peak_frame():
    d = EventDetector("cam", EventSettings(enter=0.7, exit=0.5, min_duration_s=0, cooldown_s=0))
    frame = np.zeros((8, 12, 1), np.uint8)
    heat = {i: np.zeros((4, 6), np.float32) for i in range(4)}
    heat[0][0, 0] = heat[1][3, 5] = heat[2][1, 2] = 1.0
    events = [ev for i, s in enumerate([0.8, 0.9, 0.85, 0.3]) for _, ev in d.update(i, i, i, s, (frame, heat[i]))]
    ev = events[-1].to_dict()
    assert ev["peak_frame"] == 1 and [r["box"] for r in ev["peak_regions"]] == [[0.833333, 0.75, 1.0, 1.0]]
    assert events[0].to_dict()["peak_regions"] == ev["peak_regions"]  # one object, updated as the peak rises


def test_scores_between_exit_and_enter_keep_an_event_open():
    d = EventDetector("cam", EventSettings(enter=0.7, exit=0.5, min_duration_s=0, cooldown_s=0))
    marks, _ = run(d, [0.8, 0.6, 0.55, 0.6, 0.65, 0.4])
    assert marks == [("start", 0), ("end", 5)]


def test_cooldown_blocks_a_new_event_too_soon():
    d = EventDetector("cam", EventSettings(enter=0.7, exit=0.5, min_duration_s=0, cooldown_s=1.0))
    marks, _ = run(d, [0.9, 0.1] + [0.9] * 5 + [0.1] * 3 + [0.9] * 3)  # cooldown: until 1.1 s (frame 11)
    assert marks == [("start", 0), ("end", 1), ("start", 11)]


def test_a_gap_or_an_invalid_frame_ends_the_event_and_restarts_the_count():
    d = EventDetector("cam", EventSettings(enter=0.7, exit=0.5, min_duration_s=0.2, cooldown_s=0))
    marks, _ = run(d, [0.9, 0.9, 0.9, 0.9])
    assert marks == [("start", 2)]
    [(kind, ev)] = d.update(4, 0.4, 1000.4, None)  # frozen picture
    assert kind == "end" and ev.end_reason == "invalid_input" and ev.end_frame == 3
    marks, _ = run(d, [0.9, 0.9], start=5)  # 0.1 s above enter after the gap: not yet
    assert marks == []
    assert d.interrupt("gap") == []  # nothing open: nothing to end
    marks, _ = run(d, [0.9, 0.9, 0.9], start=7)
    assert marks == [("start", 9)]


def test_hysteresis_settings_are_checked():
    with pytest.raises(ValueError, match="exit"):
        EventSettings(enter=0.5, exit=0.6)
    with pytest.raises(ValueError, match="scheme"):
        StreamSpec(id="a", url="ftp://cam/x")
    with pytest.raises(ValueError):
        StreamSpec(id="bad id with spaces", url="rtsp://cam/x")
    assert StreamSpec(id="a", url="file:///v.mp4").file_path.as_posix() == "/v.mp4"
    assert StreamSpec(id="a", url="rtsp://cam/x").file_path is None


def test_sampler_keeps_the_target_rate_on_the_source_clock():
    s = Sampler(5.0)
    kept = [i for i in range(100) if s.take(i / 25)]  # 25 fps source, 4 s
    assert len(kept) == 20 and kept[:3] == [0, 5, 10]
    assert s.take(100.0) and not s.take(100.1) and s.take(100.2)  # after a pause: no burst
    assert all(Sampler(None).take(t) for t in (0, 0, 0.001))


def test_sampler_keeps_its_slots_on_an_uneven_source_and_tolerates_float_clocks():
    """A 7 fps source sampled at 5 fps: the slots stay 0.2 s apart on the source's clock (0, 0.29,
    0.43, 0.71, 0.86, 1.0, ...), 50 frames of 70 in 10 s; restarting the slot from each kept frame
    would keep 35. A 10 fps source at 10 fps keeps every frame, though 0.1 + 0.1 + 0.1 > 0.3."""
    s = Sampler(5.0)
    kept = [i for i in range(70) if s.take(i / 7)]
    assert kept[:6] == [0, 2, 3, 5, 6, 7] and len(kept) == 50
    s = Sampler(10.0)
    assert all(s.take(i / 10) for i in range(30))


def test_rate_meter():
    m = RateMeter(window_s=2.0)
    for i in range(41):
        m.tick(i * 0.05)
    assert m.rate(2.0) == pytest.approx(20, rel=1e-9)  # 40 intervals in 2 s
    assert m.rate(2.5) == pytest.approx(15, rel=1e-9)  # stalled: 30 intervals over the 2 s window, not 20
    assert m.rate(10.0) == 0.0


def test_rate_meter_forgets_ticks_older_than_its_window():
    """10 a second until t = 10, then one a second: 2 s later it reads 1 (ticks 10, 11, 12), not the
    3.8 it would read counting the ticks from 9.1 on."""
    m = RateMeter(window_s=2.0)
    for t in [i / 10 for i in range(101)] + [11.0, 12.0]:
        m.tick(t)
    assert m.rate(12.0) == pytest.approx(1.0, rel=1e-9)


def test_validity_flags_frozen_and_blank_pictures():
    rng = np.random.default_rng(0)
    v = Validity(frozen_s=0.5)
    still = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    assert [v.check(still, t / 10) for t in range(4)] == [None] * 4  # the same picture for 0.3 s
    assert v.check(still, 0.6) == "frozen"
    assert v.check(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), 0.7) is None  # it moves again
    assert v.check(np.full((48, 64, 3), 3, np.uint8), 0.8) == "blank"


def test_validity_after_a_reset_or_a_new_size_starts_its_frozen_clock_again():
    """After a reset (a new segment) the first frame has nothing to compare with, so a still picture
    is frozen frozen_s after the second frame, as for a new camera; a frame of another size is compared
    with nothing."""
    still = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    v = Validity(frozen_s=0.25)
    v.check(still, 0.0)
    v.reset()
    assert [v.check(still, t) for t in (1.0, 1.25, 1.5)] == [None, None, "frozen"]
    assert v.check(np.resize(still, (96, 128, 3)), 1.75) is None


@pytest.mark.parametrize(("levels", "blank"), [((100, 106), False), ((100, 105), True)])
def test_a_picture_is_blank_below_a_standard_deviation_of_3(levels, blank):
    """Two levels 6 apart in equal shares: a standard deviation of exactly 3, not blank; 5 apart: 2.5."""
    frame = np.full((48, 64, 3), levels[0], np.uint8)
    frame[:, 4::8] = levels[1]  # every other column read (every 4th is): half of the values
    assert (Validity().check(frame, 0.0) == "blank") == blank


@pytest.mark.parametrize("changed, frozen", [(143, True), (144, False), (145, False)])
def test_validity_measures_every_4th_pixel_of_every_channel(changed, frozen):
    """A 48x64 RGB picture is checked on 12x16x3 = 576 values: changing 143 of them by 1 (a mean
    difference of 0.248) is still the same picture, 144 (0.25, the threshold) or 145 (0.252) are not."""
    rng = np.random.default_rng(1)
    still = rng.integers(50, 200, (48, 64, 3), dtype=np.uint8)
    moved = still.copy()
    grid = moved[::4, ::4].reshape(-1)  # the values the check reads, in order
    grid[:changed] += 1
    moved[::4, ::4] = grid.reshape(12, 16, 3)
    v = Validity(frozen_s=0.1)
    states = [v.check(f, t / 10) for t, f in enumerate([still, moved, still.copy(), moved])]
    assert (states[-1] == "frozen") == frozen


def test_bus_replays_after_an_id_and_bounds_slow_subscribers():
    bus = EventBus(keep=10, subscriber_queue=3)
    ev = Event("e1", "cam", 1.0, 0, 0.9, 0)
    bus.publish("start", ev)

    async def main():
        q = bus.subscribe(after=0)
        assert (await q.get())[:2] == (first, "start")
        for _ in range(5):
            bus.publish("end", ev)
        await asyncio.sleep(0.05)
        seqs = [q.get_nowait()[0] for _ in range(q.qsize())]
        bus.unsubscribe(q)
        return seqs

    first = bus.log[0][0]
    assert abs(first - time.time() * 1000) < 60_000  # ids start at the server's start time, in ms
    ids = [first + i for i in range(6)]
    assert asyncio.run(main()) == ids[3:]  # the three newest; the client sees the gap in ids
    assert bus.find("e1") is ev and bus.subscribers == 0

    async def reconnect(last_event_id):
        q = bus.subscribe(after=last_event_id)
        seqs = [q.get_nowait()[0] for _ in range(q.qsize())]
        bus.unsubscribe(q)
        return seqs

    assert asyncio.run(reconnect(ids[3])) == ids[4:]
    assert asyncio.run(reconnect(ids[5])) == []
    # a browser's Last-Event-ID from before a restart: ids go on from the last life's, so it replays
    # what is kept; one beyond the newest (the clock stepped back meanwhile) replays it all too
    assert asyncio.run(reconnect(first - 40)) == ids[3:] == asyncio.run(reconnect(ids[5] + 57))
    assert EventBus().publish("start", ev)[0] > ids[5]  # the next life's ids come after these


class Receiver(QuietHandler):
    fail_first = 1
    bodies: ClassVar[list] = []
    auth: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
        else:
            cls.bodies.append((self.headers["X-Aedmae-Event"], body))
            cls.auth.append(self.headers["Authorization"])
            self.send_response(204)
        self.end_headers()


def test_webhook_retries_then_delivers_and_gives_up_on_a_dead_url():
    outcomes = []
    with http_server(Receiver) as httpd:
        sender = WebhookSender(f"http://127.0.0.1:{httpd.server_port}/hook", 2.0, 2, outcomes.append)
        try:
            sender.send("start", {"id": "e1", "stream": "cam"})
            assert wait_for(lambda: outcomes == ["delivered"], 10), outcomes
            assert Receiver.bodies == [("start", {"type": "start", "event": {"id": "e1", "stream": "cam"}})]
            assert Receiver.auth == [None]
        finally:
            sender.close()
        # a user and password in the URL (escaped as URLs escape them) arrive as Basic auth, not as a host
        sender = WebhookSender(f"http://alert%40ops:pa%3Ass@127.0.0.1:{httpd.server_port}/hook", 2.0, 0,
                               outcomes.append)
        try:
            sender.send("end", {"id": "e1", "stream": "cam"})
            assert wait_for(lambda: outcomes == ["delivered"] * 2, 10), outcomes
            assert Receiver.auth[-1] == "Basic " + base64.b64encode(b"alert@ops:pa:ss").decode()
        finally:
            sender.close()
    dead = WebhookSender(f"http://127.0.0.1:{httpd.server_port}/hook", 0.5, 1, outcomes.append)  # closed now
    dead.send("end", {"id": "e2", "stream": "cam"})
    assert wait_for(lambda: outcomes[-1:] == ["failed"], 10), outcomes
    dead.close()


class Refuser(QuietHandler):
    status = 401
    calls: ClassVar[list] = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append(type(self).status)
        self.send_response(type(self).status)
        self.end_headers()


def test_webhook_gives_up_at_once_on_a_4xx_that_a_retry_cannot_change():
    outcomes = []
    with http_server(Refuser) as httpd:
        sender = WebhookSender(f"http://127.0.0.1:{httpd.server_port}/hook", 2.0, 2, outcomes.append)
        try:
            sender.send("start", {"id": "e1"})
            assert wait_for(lambda: outcomes == ["failed"], 10), outcomes
            assert Refuser.calls == [401]  # wrong credentials: once, not three times over 1.5 s of backoff
            Refuser.status = 429  # too many requests: worth the retries
            sender.send("start", {"id": "e2"})
            assert wait_for(lambda: outcomes == ["failed"] * 2, 10), outcomes
            assert Refuser.calls == [401, 429, 429, 429]
        finally:
            sender.close()


class SlowReceiver(QuietHandler):
    """Holds every request until `release` is set, as a receiver in trouble does."""
    release = threading.Event()
    ids: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).ids.append(body["event"]["id"])
        type(self).release.wait(10)
        self.send_response(204)
        self.end_headers()


def test_a_full_webhook_backlog_drops_its_oldest_messages():
    outcomes = []
    with http_server(SlowReceiver) as httpd:
        sender = WebhookSender(f"http://127.0.0.1:{httpd.server_port}/hook", 10.0, 0, outcomes.append, backlog=3)
        try:
            sender.send("start", {"id": "e0"})
            assert wait_for(lambda: SlowReceiver.ids == ["e0"], 10)  # in flight, held by the receiver
            for i in range(1, 6):
                sender.send("start", {"id": f"e{i}"})
            assert outcomes == ["dropped", "dropped"]  # e1 and e2 went, as soon as e4 and e5 came
            SlowReceiver.release.set()
            assert wait_for(lambda: outcomes.count("delivered") == 4, 10), outcomes
            assert SlowReceiver.ids == ["e0", "e3", "e4", "e5"]
        finally:
            SlowReceiver.release.set()
            sender.close()


def test_shedding_enters_on_pressure_leaves_after_its_hold_and_holds_longer_when_back_soon():
    s = Shedding(True, hold_s=10.0, max_hold_s=30.0, rng=random.Random(0))
    assert s.decide(0.0) is None  # no frame superseded yet
    s.pressure(1.0)
    assert s.decide(1.0) == 3 and s.stride == 3 and s.entered == 1
    s.pressure(2.0)  # still behind: the hold runs from the latest superseded frame
    assert s.decide(2.0 + 7.9) is None and s.decide(2.0 + 12.1) == 1  # 10 s, jittered within +-20%
    left = 2.0 + 12.1
    assert s.decide(left + 1) is None  # no new pressure
    s.pressure(left + 5)  # back within twice the hold: the next hold is twice as long
    assert s.decide(left + 5) == 3 and s.hold_s == 20.0
    assert s.decide(left + 5 + 15.9) is None and s.decide(left + 5 + 24.1) == 1
    s.pressure(left + 100)  # much later: the hold starts over
    assert s.decide(left + 100) == 3 and s.hold_s == 10.0 and s.entered == 3
    off = Shedding(False)
    off.pressure(1.0)
    assert off.decide(1.0) is None
    gap4 = Shedding(True, rng=random.Random(0), stride=4)  # a model scored on (t-4, t, t+4) keeps one frame in 4
    gap4.pressure(1.0)
    assert gap4.decide(1.0) == 4 and gap4.stride == 4


def test_shedding_holds_from_the_latest_superseded_frame_and_doubles_its_hold_up_to_the_cap():
    s = Shedding(True, hold_s=10.0, max_hold_s=30.0, rng=random.Random(1))
    s.pressure(0.0)
    assert s.decide(0.0) == 3
    s.pressure(9.0)  # superseded again 9 s in: the hold (8-12 s) now runs from here, not from 0
    assert s.decide(0.0 + 12.5) is None and s.decide(9.0 + 12.1) == 1
    for hold in (20.0, 30.0, 30.0):  # back within twice the hold each time: doubled, capped at 30
        back = s._since + 1.0
        s.pressure(back)
        assert s.decide(back) == 3 and s.hold_s == hold
        assert s.decide(back + 1.21 * hold) == 1


def test_score_pages_stop_at_the_first_record_still_waiting_and_count_what_is_gone():
    # seqs 1001-1010 of a life that began at 1000; 1001-1004 no longer kept; 1009 still waits for smoothing
    history = [{"seq": q, "capture_time": 50.0 + q - 1000, "final": q != 1009} for q in range(1005, 1011)]
    seqs = (1000, 1010)
    got = page(history, seqs, 1006, None, 500)
    assert [r["seq"] for r in got["scores"]] == [1007, 1008] and got["next_after"] == 1008 and got["missed"] == 0
    got = page(history, seqs, 1001, None, 2)
    assert [r["seq"] for r in got["scores"]] == [1005, 1006] and got["missed"] == 3  # 1002-1004 are gone
    for outside in (0, 999, 1011):  # from the start, another life's seq, a clock stepped back
        assert page(history, seqs, outside, None, 1)["missed"] == 4
    got = page(history, seqs, 1008, None, 500)
    assert got["scores"] == [] and got["next_after"] == 1008  # nothing final yet: ask again from there
    got = page(history, seqs, None, 55.5, 500)
    assert [r["seq"] for r in got["scores"]] == [1006, 1007, 1008] and got["next_since"] == 58.0
    got = page(history, seqs, None, 56.0, 500)  # a poller's next_since: record 1006 is not sent twice
    assert [r["seq"] for r in got["scores"]] == [1007, 1008]
    got = page(history, seqs, None, 58.0, 500)
    assert got["scores"] == [] and got["next_since"] == 58.0  # nothing final after it yet: ask again
    assert page([], seqs, 1005, None, 10)["missed"] == 5  # nothing kept: 1006-1010 are gone
    got = page(history, seqs, None, None, 2)  # no cursor: the newest, final or not
    assert [r["seq"] for r in got["scores"]] == [1009, 1010] and got["next_after"] == 1010
    got["scores"][0]["final"] = True
    assert history[4]["final"] is False  # copies: the scoring thread fills the kept records in later


def test_a_busy_camera_cannot_push_out_a_quiet_cameras_events():
    bus = EventBus(keep=4)
    quiet = Event("q1", "quiet", 1.0, 0, 0.9, 0)
    bus.publish("start", quiet)
    busy = [Event(f"b{i}", "busy", 2.0 + i, i, 0.9, i) for i in range(10)]
    for ev in busy:
        bus.publish("start", ev)
        bus.publish("end", ev)
    assert bus.events_of("quiet") == [quiet] and bus.find("q1") is quiet  # kept with its snapshot
    assert bus.events_of("busy") == busy[-3:] and bus.find("b0") is None  # the busy camera lost its oldest
    other = Event("o1", "other", 20.0, 0, 0.9, 0)
    bus.publish("start", other)
    assert [e.id for e in bus.recent] == ["q1", "b8", "b9", "o1"] and len(bus.recent) == bus.keep
