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
