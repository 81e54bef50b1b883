"""Hottest regions of a heatmap: hand-checked grids, and the shipped model locating a pasted object."""

import warnings

import cv2
import numpy as np
import pytest

from model.overlay import draw_regions, overlay_heatmap
from model.regions import hot_regions
from tests.conftest import require_shared


def grid(rows: list[str]) -> np.ndarray:
    """A heatmap from digits: '0'..'9' are heat values."""
    return np.array([[float(c) for c in row] for row in rows], np.float32)


def test_regions_ranked_by_peak_with_boxes_as_fractions():
    heat = grid(["000000",
                 "090000",
                 "066006",
                 "000005"])
    a, b = hot_regions(heat, 3)
    assert a.peak == 9 and a.tokens == 3 and a.box == (1 / 6, 1 / 4, 3 / 6, 3 / 4)
    assert b.peak == 6 and b.tokens == 2 and b.box == (5 / 6, 2 / 4, 1.0, 1.0)
    assert a.share == pytest.approx(21 / 32) and b.share == pytest.approx(11 / 32)
    assert [type(v) for v in a.box] == [float] * 4  # plain floats: the API serialises them


def test_level_is_half_the_frame_maximum_and_cuts_shoulders():
    heat = grid(["8300",
                 "0003"])
    (only,) = hot_regions(heat, 5)  # both 3s are below half of 8: one region, the shoulder left out
    assert only.tokens == 1 and only.box == (0.0, 0.0, 0.25, 0.5)
    assert len(hot_regions(heat, 5, level=0.3)) == 2  # the shoulder joins the 8; the far 3 is its own region


def test_diagonal_tokens_join_and_k_limits():
    heat = grid(["900",
                 "090",
                 "007"])
    (region,) = hot_regions(heat, 3)
    assert region.tokens == 3 and region.box == (0.0, 0.0, 1.0, 1.0)
    many = np.zeros((5, 5), np.float32)
    many[::2, ::2] = np.arange(1, 10).reshape(3, 3) + 10  # nine separate tokens, 11..19
    peaks = [r.peak for r in hot_regions(many, 4)]
    assert peaks == [19, 18, 17, 16]


def test_ties_are_ordered_top_left_first():
    heat = grid(["0505",
                 "0000",
                 "5000"])
    assert [r.box[:2] for r in hot_regions(heat, 3)] == [(0.25, 0.0), (0.75, 0.0), (0.0, 2 / 3)]


def test_cold_and_bad_heatmaps():
    assert hot_regions(np.zeros((3, 4)), 2) == []
    assert hot_regions(-np.ones((3, 4)), 2) == []
    with pytest.raises(ValueError, match="NaN"):
        hot_regions(np.array([[1.0, np.nan]]), 1)
    with pytest.raises(ValueError, match="shape"):
        hot_regions(np.ones(4), 1)
    with pytest.raises(ValueError, match="k must"):
        hot_regions(np.ones((2, 2)), 0)
    with pytest.raises(ValueError, match="level"):
        hot_regions(np.ones((2, 2)), 1, level=0.0)


def test_draw_regions_outlines_the_box_only():
    image = np.full((40, 80, 3), 100, np.uint8)
    (region,) = hot_regions(grid(["0000", "0900"]), 1)  # box x 0.25..0.5, y 0.5..1 -> pixels 20..39, 20..39
    out = draw_regions(image, [region])
    assert (out[30, 20] == 255).all() and (out[20, 30] == 255).all() and (out[30, 39] == 255).all()
    assert (out[30, 30] == 100).all() and (out[5, 70] == 100).all()  # inside and far away: untouched
    assert (image == 100).all()  # the input is left as it was


def test_overlay_blends_hot_tokens_and_leaves_cold_ones_as_they_were():
    """A gray frame of 100 under a 2x2 heatmap at its own size: a cold token (0) is left as it was;
    a token at vmax or above is 0.55 x the frame + 0.45 x JET's hottest colour, RGB (128, 0, 0):
    (112.6, 55, 55), truncated. A vmax of 0 draws no NaN."""
    frame = np.full((2, 2, 1), 100, np.uint8)
    out = overlay_heatmap(frame, np.array([[0.0, 2.0], [4.0, 0.0]]), vmax=2.0)
    assert out.shape == (2, 2, 3) and out[0, 0].tolist() == [100, 100, 100] and out[1, 1].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [112, 55, 55] and out[1, 0].tolist() == [112, 55, 55]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert overlay_heatmap(frame, np.zeros((2, 2)), vmax=0.0)[0, 0].tolist() == [100, 100, 100]


def _pasted_window(background: list[np.ndarray], x: int, y: int, size: int) -> np.ndarray:
    """Frames t-3, t, t+3 with a textured square moving 6 px right per step, its frame-t box at (x, y)."""
    texture = np.random.default_rng(0).integers(0, 256, (size, size), np.uint8)
    out = []
    for step, frame in zip((-1, 0, 1), background, strict=True):
        f = frame.copy()
        left = x + 6 * step
        f[y : y + size, left : left + size, 0] = texture
        out.append(f)
    return np.stack(out)[None]


@pytest.mark.parametrize("corner", [(30, 40), (170, 100)])
def test_shipped_model_boxes_the_pasted_object(corner):
    """Real Ped2 frames through the shipped ONNX graph: the hottest region lies on a square pasted into
    the frames, wherever it is put (a box read transposed or mirrored would miss the first or both).
    Since session 49 the shipped model, trained on motion at the wrong speed, lights the square's edges
    along its motion more than its middle, so the region overlaps the square rather than holding its
    centre."""
    from export.bundle import load_bundle
    from model.shipped import SHIPPED_DIR
    from service.backends import OnnxRuntimeBackend
    from service.decoding import to_model_frame
    from service.settings import Settings

    folder = require_shared("ped2", "train", "01")
    bundle = load_bundle(SHIPPED_DIR)
    h, w = bundle.image_size
    frames = [to_model_frame(cv2.imread(str(folder / f"{i:03d}.jpg")), (h, w), bundle.channels) for i in (60, 63, 66)]
    x, y, size = *corner, 24
    backend = OnnxRuntimeBackend(bundle, Settings(max_batch_size=1))
    heat = backend.infer(_pasted_window(frames, x, y, size))["heatmap"][0]
    top = hot_regions(heat, 1)[0]
    x0, y0, x1, y1 = top.box
    sx0, sy0, sx1, sy1 = x / w, y / h, (x + size) / w, (y + size) / h  # the square in frame t
    assert min(x1, sx1) > max(x0, sx0) and min(y1, sy1) > max(y0, sy0), (top, (sx0, sy0, sx1, sy1))
    assert (x1 - x0) * (y1 - y0) < 0.25  # a region, not the whole frame


def test_a_token_at_exactly_the_level_belongs_to_the_region_and_cold_tokens_are_no_heat():
    """A token at half the peak is "at least half as hot", so in the region; a negative token (no
    backend makes one, but the function takes any array) adds no heat to the total shares are of."""
    heat = np.array([[1.0, 0.5, 0.0], [-1.0, 0.0, 0.25]], np.float32)
    (region,) = hot_regions(heat, k=3)
    assert region.tokens == 2 and region.box == (0.0, 0.0, 2 / 3, 0.5)
    assert region.share == pytest.approx(1.5 / 1.75)
