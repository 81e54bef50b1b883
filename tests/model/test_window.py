import numpy as np

from model.window import FrameWindow, clip_windows, context_indices


def test_context_indices_clamp():
    assert context_indices(10, np.array([0, 5, 9])).tolist() == [[0, 0, 3], [2, 5, 8], [6, 9, 9]]


def test_streaming_window_matches_whole_clip():
    frames = np.arange(11, dtype=np.uint8).reshape(11, 1, 1, 1) * np.ones((1, 2, 2, 1), np.uint8)
    expected = clip_windows(frames, np.arange(11))
    for chunk in (1, 2, 5, 11):
        w = FrameWindow()
        got = {}
        for start in range(0, 11, chunk):
            for f in frames[start : start + chunk]:
                got.update(dict(w.push(f)))
        assert len(got) == 11 - 3, "each frame waits for frame t+3"
        got.update(dict(w.flush()))
        assert sorted(got) == list(range(11))
        assert all(np.array_equal(got[t], expected[t]) for t in range(11))


def test_short_stream_flushes_everything():
    w = FrameWindow()
    frames = [np.full((1, 1, 1), i, np.uint8) for i in range(2)]
    assert w.push(frames[0]) == [] and w.push(frames[1]) == []
    out = w.flush()
    assert [t for t, _ in out] == [0, 1] and out[1][1][:, 0, 0, 0].tolist() == [0, 1, 1]
