"""Scene cuts (model.cuts): the pictures compared, their spread, the change between two of them, the
detector's line and state, and the window that starts afresh at a cut."""

import cv2
import numpy as np
import pytest

from model.cuts import CutDetector, CutWindow, picture_change, small_gray, spreads
from model.frames import to_model_frame
from model.window import clip_windows
from tests.conftest import require_shared, scene_frames


def test_small_gray_is_each_areas_mean_of_the_channels_mean():
    """A 160x240 RGB frame of 8x8 blocks shrinks to 20x30, each pixel its block's value; the gray of a
    pixel is the mean of its three channels (R + 10 for channels R, R + 10, R + 20). A frame whose
    shorter side is already 20 or less is not shrunk."""
    red = (np.arange(20)[:, None] * 7 + np.arange(30)[None, :] * 3) % 200  # one value per 8x8 block
    frame = np.repeat(np.repeat(red, 8, axis=0), 8, axis=1)[..., None] + np.array([0, 10, 20])
    small = small_gray(frame[None].astype(np.uint8))
    assert small.shape == (1, 600) and small.dtype == np.float32
    assert small[0].tolist() == (red + 10).reshape(-1).tolist()
    two = small_gray(np.stack([frame[:16, :24], frame[8:24, 8:32]]).astype(np.uint8))  # as they are
    assert two.shape == (2, 384) and two[0].tolist() == (frame[:16, :24].mean(axis=2)).reshape(-1).tolist()


def test_spread_is_the_interquartile_range_at_least_min_spread_and_nan_when_uniform():
    """Rows of 600: quartiles at sorted positions 150 and 450. Four levels 150 apiece: 300 - 100;
    two levels 10 apart: 10, raised to 32; one level: NaN (nothing to divide by)."""
    rows = np.stack([np.repeat([0, 100, 200, 300], 150), np.repeat([50, 60], 300), np.full(600, 5)])
    got = spreads(rows[:, ::-1].astype(np.float32))  # in any order
    assert got[:2].tolist() == [200.0, 32.0] and np.isnan(got[2])


def test_cut_detector_calls_another_scene_a_cut_and_nothing_else():
    # blobs moving on a faint texture (they carry most of the picture's variation), at the tiny
    # model's 32x48, where the correlation of consecutive frames fell to 0.47
    a = np.stack([to_model_frame(f, (32, 48), 1) for f in scene_frames(30, 32, 48, seed=0)])
    b = np.stack([to_model_frame(f, (32, 48), 1) for f in scene_frames(2, 32, 48, seed=5)])
    d = CutDetector()
    assert [d.check(f) for f in a] == [None] * 30 and 0 <= d.last < 0.1
    r = d.check(b[0])  # another camera switched onto the stream
    assert r is not None and r > 0.1 and r == d.last == pytest.approx(picture_change(a[-1], b[0]), abs=1e-6)
    assert d.check(b[1]) is None  # the new scene goes on
    assert d.check(np.full_like(b[0], 7)) is None and d.last is None  # blank: Validity's business
    off = CutDetector(max_change=0)
    assert [off.check(f) for f in (a[0], b[0])] == [None, None] and off.last > 0.1
    fresh = CutDetector()  # what a stream makes when a segment ends
    assert fresh.check(b[0]) is None and fresh.last is None  # nothing to compare with yet


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_cut_detector_in_chunks_gives_each_pairs_picture_change(chunk):
    """A request's frames are checked at once, against the last frame of the request before (kept
    normalised between calls): every frame's change is picture_change of it and the frame before, to
    the last bit, across chunk edges, a cut and a blank picture."""
    a = [to_model_frame(f, (32, 48), 1) for f in scene_frames(9, 32, 48, seed=0)]
    b = [to_model_frame(f, (32, 48), 1) for f in scene_frames(7, 32, 48, seed=5)]
    clip = np.stack([*a, *b[:4], np.full_like(a[0], 7), *b[4:]])  # a cut at frame 9, a blank at 13
    d, found, lasts = CutDetector(), [], []
    for k in range(0, len(clip), chunk):
        found += d.check_many(clip[k : k + chunk])
        lasts.append(d.last)
    expected = [None] + [picture_change(clip[i - 1], clip[i]) for i in range(1, len(clip))]
    assert found == [v if v is not None and v > 0.1 else None for v in expected]
    assert [i for i, v in enumerate(found) if v is not None] == [9]
    assert expected[13] is None and expected[14] is None  # the blank picture is compared with nothing
    ends = [expected[min(k + chunk, len(clip)) - 1] for k in range(0, len(clip), chunk)]
    assert lasts == ends


def test_cut_detector_on_real_footage():
    """Ped2 consecutive frames are one scene, and so is a sudden change of exposure; an Avenue frame
    after a Ped2 frame is a cut (at the shipped model's 160x240 gray; benchmarks/scene_cuts.py measures
    every video)."""
    folder = require_shared("ped2", "test", "01")
    ok, avenue = cv2.VideoCapture(str(require_shared("footage", "avenue_train_11.mp4"))).read()
    assert ok
    ped2 = [to_model_frame(cv2.imread(str(p)), (160, 240), 1) for p in sorted(folder.glob("*.jpg"))[:30]]
    d = CutDetector()
    assert [d.check(f) for f in ped2] == [None] * 30 and d.last < 0.05
    darker = (ped2[-1] * 0.5 + 40).astype(np.uint8)  # the exposure changes at once
    assert d.check(darker) is None and d.last < 0.01
    assert d.check(to_model_frame(avenue, (160, 240), 1)) is not None


def test_cut_window_cuts_the_clip_in_two_however_the_frames_arrive():
    first, second = scene_frames(9, 32, 48, seed=1), scene_frames(7, 32, 48, seed=2)
    second[:, :, 24:] += 50  # another scene (the generated textures alone are faint)
    clip = np.concatenate([first, second])
    expected = [*clip_windows(first, np.arange(9)), *clip_windows(second, np.arange(7))]
    for chunk in (1, 4, 16):
        w = CutWindow()
        got = [pair for k in range(0, 16, chunk) for pair in w.push_many(clip[k : k + chunk])] + w.flush()
        assert [t for t, _ in got] == list(range(16)) and w.cut_frames == [9]
        assert all(np.array_equal(x, e) for (_, x), e in zip(got, expected, strict=True))
        assert w.take_cuts({7, 8}) == set() and w.take_cuts({8, 9, 10}) == {9} and w.cut_frames == []
    w = CutWindow(max_change=0)  # off: one clip
    got = w.push_many(clip) + w.flush()
    assert w.cut_frames == [] and all(np.array_equal(x, e) for (_, x), e in zip(got, clip_windows(clip, np.arange(16)),
                                                                                 strict=True))


def test_a_kept_window_holds_its_frames_not_the_request_they_came_in():
    """A stream_id's window lives between requests: it must keep 7 frames alive, not the whole array of
    the last request (256 frames of the shipped model's size: 9.8 MB, kept by each of up to 1,024 contexts)."""
    request = scene_frames(64, 32, 48, seed=1)
    w = CutWindow()
    first = w.push_many(request)
    assert any(np.shares_memory(f, request) for f in w.window._frames)  # views, until the window is kept
    w.own()
    assert len(w.window._frames) == 7 and not any(np.shares_memory(f, request) for f in w.window._frames)
    assert sum(f.nbytes for f in w.window._frames) == 7 * request[0].nbytes
    more = w.push_many(request[::-1].copy()) + w.flush()  # and the copies still give the same inputs
    whole = np.concatenate([request, request[::-1]])
    expected = clip_windows(whole, np.arange(len(whole)))
    assert all(np.array_equal(x, expected[t]) for t, x in first + more)


def test_a_change_exactly_at_the_line_is_not_a_cut():
    a, b = scene_frames(1, 32, 48, seed=0)[0], scene_frames(1, 32, 48, seed=5)[0]
    change = picture_change(a, b)
    assert change is not None and change > 0.1
    at = CutDetector(max_change=change)
    assert [at.check(a), at.check(b)] == [None, None] and at.last == change
    below = CutDetector(max_change=float(np.nextafter(change, 0)))
    assert [below.check(a), below.check(b)] == [None, change]


def test_a_frame_of_another_shape_is_compared_with_nothing():
    """Pictures are compared at a shorter side of 20 pixels, so a frame of another shape (a library
    user's other camera: 48x48 after 32x48) has nothing to be compared with: the detector starts again
    there instead of failing, and compares the frames of the new shape with each other."""
    wide, square = scene_frames(2, 32, 48, seed=0), scene_frames(2, 48, 48, seed=5)
    d = CutDetector()
    assert d.check(wide[0]) is None and d.check(square[0]) is None and d.last is None
    assert d.check(square[1]) is None and d.last is not None and d.last < 0.1


def test_a_copy_of_a_cut_window_is_independent():
    """A request that fails goes back to the copy made before it: what the request pushed into its own
    window, the detector's previous picture included, leaves the copy as it was."""
    first, second = scene_frames(5, 32, 48, seed=1), scene_frames(3, 32, 48, seed=2)
    second[:, :, 24:] += 50  # another scene
    w = CutWindow()
    w.push_many(first)
    kept = w.copy()
    w.push_many(second)
    assert w.cut_frames == [5] and kept.cut_frames == [] and kept.seen == 5
    kept.push_many(second)  # the retried request finds the same cut
    assert kept.cut_frames == [5] and kept.seen == 8
