import numpy as np
import pytest

from model.window import FrameWindow, clip_windows, context_indices


def test_context_indices_clamp():
    assert context_indices(10, np.array([0, 5, 9])).tolist() == [[0, 0, 3], [2, 5, 8], [6, 9, 9]]


def test_context_indices_of_a_longer_gap():
    assert context_indices(10, np.array([0, 5, 9]), gap=4).tolist() == [[0, 0, 4], [1, 5, 9], [5, 9, 9]]
    with pytest.raises(ValueError, match="gap"):
        context_indices(10, np.array([0]), gap=0)


@pytest.mark.parametrize("gap", [3, 4])
def test_streaming_window_matches_whole_clip(gap):
    frames = np.arange(11, dtype=np.uint8).reshape(11, 1, 1, 1) * np.ones((1, 2, 2, 1), np.uint8)
    expected = clip_windows(frames, np.arange(11), gap)
    for chunk in (1, 2, 5, 11):
        w = FrameWindow(gap=gap)
        got = {}
        for start in range(0, 11, chunk):
            for f in frames[start : start + chunk]:
                got.update(dict(w.push(f)))
        assert len(got) == 11 - gap, "each frame waits for frame t+gap"
        got.update(dict(w.flush()))
        assert sorted(got) == list(range(11))
        assert all(np.array_equal(got[t], expected[t]) for t in range(11))


def test_short_stream_flushes_everything():
    w = FrameWindow()
    frames = [np.full((1, 1, 1), i, np.uint8) for i in range(2)]
    assert w.push(frames[0]) == [] and w.push(frames[1]) == []
    out = w.flush()
    assert [t for t, _ in out] == [0, 1] and out[1][1][:, 0, 0, 0].tolist() == [0, 1, 1]


def test_cut_window_cuts_the_clip_in_two_however_the_frames_arrive():
    from model.cuts import CutWindow
    from tests.conftest import scene_frames

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
    from model.cuts import CutWindow
    from tests.conftest import scene_frames

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


def test_every_third_frame_with_spacing_3_gives_the_full_rate_inputs_of_those_frames():
    frames = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    kept = frames[::3]  # frames 0, 3, ..., 39
    w = FrameWindow(spacing=3)
    got = [x for f in kept for _, x in w.push(f)] + [x for _, x in w.flush()]
    full = clip_windows(frames, np.arange(0, 40, 3))
    assert len(got) == len(kept)
    # the same inputs, the edges too here (the clip's last frame is a kept one; were it not, the
    # last kept frame's t+3 would clamp to itself rather than to the clip's last frame)
    np.testing.assert_array_equal(np.stack(got), full)
    assert got[0][:, 0, 0, 0].tolist() == [0, 0, 3] and got[-1][:, 0, 0, 0].tolist() == [36, 39, 39]


def test_one_frame_in_four_with_a_gap_of_4_gives_the_full_rate_inputs_of_those_frames():
    frames = np.arange(41, dtype=np.uint8).reshape(41, 1, 1, 1)
    w = FrameWindow(spacing=4, gap=4)
    got = [x for f in frames[::4] for _, x in w.push(f)] + [x for _, x in w.flush()]
    np.testing.assert_array_equal(np.stack(got), clip_windows(frames, np.arange(0, 41, 4), 4))
    assert got[1][:, 0, 0, 0].tolist() == [0, 4, 8]


@pytest.mark.parametrize(("spacing", "gap"), [(0, 3), (2, 3), (3, 4)])
def test_a_spacing_that_does_not_divide_the_gap_is_refused(spacing, gap):
    with pytest.raises(ValueError, match="spacing"):
        FrameWindow(spacing, gap)
