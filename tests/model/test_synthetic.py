import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from model.config import SyntheticConfig
from model.dataset import Segment, TrainingClips, motion_gradient, shift_image, write_anomaly_examples
from model.errors import ConfigError
from model.synthetic import AnomalySynthesizer, frame_offsets, moving_boxes, speed_up
from tests.conftest import scene_frames


@pytest.fixture
def synth():
    videos = [scene_frames(30, seed=1), scene_frames(30, seed=2)]
    return AnomalySynthesizer(videos, SyntheticConfig(max_objects=1, max_speed=0.08)), videos


@pytest.mark.parametrize("seed", range(12))
def test_mask_covers_exactly_the_pasted_pixels(synth, seed):
    synthesizer, videos = synth
    rng = np.random.default_rng(seed)
    clean = {o: videos[0][10 + o] for o in frame_offsets()}
    pasted, mask = synthesizer.paste(clean, rng)
    assert mask.any(), "an object must land in frame t"
    changed = np.any(pasted[0] != clean[0], axis=2)
    # nothing outside the mask changes; inside it, only pixels equal by chance may look unchanged
    assert not np.any(changed & ~mask)
    assert changed[mask].mean() > 0.5
    for o in frame_offsets():  # the inputs were not modified in place
        assert np.array_equal(clean[o], videos[0][10 + o])


def test_object_moves_between_frames(synth):
    synthesizer, videos = synth
    moved = 0
    for seed in range(10):
        clean = {o: videos[0][10 + o] for o in frame_offsets()}
        pasted, _ = synthesizer.paste(clean, np.random.default_rng(seed))
        regions = [np.any(pasted[o] != clean[o], axis=2) for o in (-3, 0, 3)]
        centres = [np.argwhere(r).mean(axis=0) for r in regions if r.any()]
        if len(centres) == 3 and np.linalg.norm(centres[0] - centres[2]) > 1.0:
            moved += 1
    assert moved >= 7


def test_an_object_spins_between_frames_only_when_its_motion_says_so(synth):
    from model.synthetic import Motion, SceneObject

    synthesizer, _ = synth
    mask = np.zeros((20, 8), bool)
    mask[:, 2:6] = True  # a standing bar: turning it changes its pixels
    bar = SceneObject(np.full((20, 8, 3), 200, np.uint8), mask)
    for spin, turned in ((0.0, False), (10.0, True)):
        rendered = synthesizer._render(bar, (-3, 3), Motion(1.0, 0.0, spin, 36.0, 24.0, 0.0, 0.0))
        assert (not np.array_equal(rendered[0][2], rendered[1][2])) == turned


def test_procedural_and_footage_objects(synth):
    synthesizer, _ = synth
    rng = np.random.default_rng(0)
    obj = synthesizer.procedural_object(rng)
    assert obj.mask.any() and obj.image.shape[:2] == obj.mask.shape
    footage = [synthesizer.footage_object(np.random.default_rng(s)) for s in range(5)]
    assert any(o is not None and o.mask.sum() >= 30 for o in footage), "the walking blobs are foreground"


def test_cutouts_folder(tmp_path, synth):
    import cv2

    from model.errors import DataError
    from model.synthetic import load_cutouts

    rgba = np.zeros((10, 8, 4), np.uint8)
    rgba[2:8, 2:6] = (0, 0, 255, 255)
    cv2.imwrite(str(tmp_path / "red.png"), rgba)
    objs = load_cutouts(tmp_path, 3)
    assert objs[0].mask.sum() == 24 and tuple(objs[0].image[4, 4]) == (255, 0, 0)
    faint = rgba.astype(np.uint16) * 257
    faint[..., 3] = np.where(rgba[..., 3] > 0, 65535, 20000)  # 16-bit alpha: 20000 is 78 of 255, outside
    cv2.imwrite(str(tmp_path / "red.png"), faint)
    (deep,) = load_cutouts(tmp_path, 3)
    assert deep.mask.sum() == 24 and np.array_equal(deep.image, objs[0].image)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgba[:, :, :3])
    with pytest.raises(DataError, match="RGBA"):
        load_cutouts(tmp_path, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no \*\.png cut-outs"):
        load_cutouts(tmp_path / "empty", 3)


def test_cutouts_are_three_in_ten_of_the_objects(tmp_path, synth):
    import cv2

    _, videos = synth
    rgba = np.zeros((10, 8, 4), np.uint8)
    rgba[2:8, 2:6] = (0, 0, 255, 255)
    cv2.imwrite(str(tmp_path / "red.png"), rgba)
    synthesizer = AnomalySynthesizer(videos, SyntheticConfig(max_objects=1, cutouts_dir=str(tmp_path)))
    rng = np.random.default_rng(0)
    share = np.mean([synthesizer.sample_object(rng) is synthesizer.cutouts[0] for _ in range(1000)])
    assert 0.26 < share < 0.34, share


def test_foreground_blobs_are_person_sized_against_a_background_from_the_whole_video():
    """A dark box that stands still through the first 50 of 200 frames and then leaves is not
    background (the median is taken over frames spread across the video); at frame 150 a 10x20
    walker is a blob; a 1-pixel-wide line 40 tall (a flickering wire), a 40x5 strip and a 4x6 speck
    are not."""
    video = np.full((200, 60, 80, 3), 120, np.uint8)
    video[:50, 5:25, 55:75] = 20  # stood still, then left
    video[150, 30:50, 10:20] = 220  # the walker
    video[150, 10:50, 30] = 220  # a line: opened away
    video[150, 52:57, 30:70] = 220  # a strip: under 6 rows
    video[150, 5:11, 40:44] = 220  # 6 rows but 24 pixels: under 30
    synthesizer = AnomalySynthesizer([video], SyntheticConfig(max_objects=1))
    _, _, blobs = synthesizer.foreground(0, 150)
    assert [box for _, box in blobs] == [(10, 30, 10, 20)]


def test_sample_layout_and_fraction(synth):
    synthesizer, videos = synth
    segs = [Segment("a", videos[0], 0)]
    ds = TrainingClips(segs, synthesizer, fraction=0.5, seed=3)
    s = ds[5]
    h, w, c = videos[0].shape[1:]
    assert s["frames"].shape == (3, h, w, c) and s["frames"].dtype.is_floating_point is False
    assert s["target"].shape == (c, h, w) and s["gradient"].shape == (c, h, w) and s["mask"].shape == (1, h, w)
    assert np.array_equal(s["target"].numpy().transpose(1, 2, 0), videos[0][5])  # the target stays clean
    flags = [bool(ds[i]["mask"].any()) for i in range(len(ds))]
    assert 0.2 < np.mean(flags) < 0.8
    assert all(bool(ds[i]["mask"].any()) == flags[i] for i in range(len(ds)))  # reproducible
    clean = TrainingClips(segs, None, fraction=0.5)[5]
    expected = motion_gradient(videos[0][4], videos[0][6])
    assert np.array_equal(clean["gradient"].numpy(), expected)
    # edges clamp: the first sample's t-3 is frame 0
    assert np.array_equal(TrainingClips(segs, None, 0.0)[0]["frames"][0].numpy(), videos[0][0])


def test_a_sample_at_another_gap_reads_and_pastes_over_that_gap(synth):
    """The label-free validations of a model scored on (t-4, t, t+4) (model.scoring.context_gap) read
    frames 4 apart and move the pasted object over those 4 frames; the same draw otherwise."""
    synthesizer, videos = synth
    segs = [Segment("a", videos[0], 0)]
    at3, at4 = (TrainingClips(segs, synthesizer, fraction=1.0, seed=3, gap=g)[10] for g in (3, 4))
    clean4 = TrainingClips(segs, None, fraction=0.0, gap=4)[10]["frames"].numpy()
    assert all(np.array_equal(clean4[k], videos[0][10 + o]) for k, o in enumerate((-4, 0, 4)))
    assert np.array_equal(at3["mask"], at4["mask"]) and np.array_equal(at3["frames"][1], at4["frames"][1])

    def centre(sample, k, clean):  # the pasted object's centre in input frame k
        return np.argwhere(np.any(sample["frames"][k].numpy() != clean[k], axis=2)).mean(axis=0)

    clean3 = TrainingClips(segs, None, fraction=0.0)[10]["frames"].numpy()
    step3 = np.linalg.norm(centre(at3, 2, clean3) - centre(at3, 0, clean3))
    step4 = np.linalg.norm(centre(at4, 2, clean4) - centre(at4, 0, clean4))
    assert step4 == pytest.approx(step3 * 4 / 3, rel=0.15), "the same motion over 8 frames instead of 6"


def test_motion_gradient_is_the_absolute_difference_without_wrapping():
    before, after = np.array([[[10, 200, 7]]], np.uint8), np.array([[[200, 10, 7]]], np.uint8)
    assert motion_gradient(before, after).tolist() == [[[190.0]], [[190.0]], [[0.0]]]  # (C, H, W)


def test_shift_image_by_hand():
    image = np.arange(12).reshape(3, 4)
    assert shift_image(image, 1, 2).tolist() == [[0, 0, 0, 1], [0, 0, 0, 1], [4, 4, 4, 5]]
    frames = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4, 1)
    moved = shift_image(frames, 1, 2, axes=(1, 2))
    assert moved.shape == frames.shape and moved[1, :, :, 0].tolist() == shift_image(frames[1, :, :, 0], 1, 2).tolist()
    assert shift_image(frames, 0, 0) is frames
    # the same definition on torch tensors (the scoring's grid shifts, traced into the ONNX graph)
    assert torch.equal(shift_image(torch.from_numpy(frames), 1, 2, axes=(1, 2)), torch.from_numpy(moved))


def test_grid_shift_moves_every_part_of_a_sample_alike(synth):
    synthesizer, videos = synth
    segs = [Segment("a", videos[0], 0)]
    plain = TrainingClips(segs, synthesizer, fraction=1.0, seed=3)
    moved = TrainingClips(segs, synthesizer, fraction=1.0, seed=3, max_shift=7)
    seen = set()
    for i in range(12):
        a, b = plain[i], moved[i]
        frames = a["frames"].numpy()
        found = [(dy, dx) for dy in range(8) for dx in range(8)
                 if np.array_equal(shift_image(frames, dy, dx, axes=(1, 2)), b["frames"].numpy())]
        assert len(found) >= 1, "the frames are the unshifted sample moved by at most 7 pixels"
        dy, dx = found[0]
        assert np.array_equal(shift_image(a["target"].numpy(), dy, dx, axes=(1, 2)), b["target"].numpy())
        assert np.array_equal(shift_image(a["mask"].numpy(), dy, dx, axes=(1, 2)), b["mask"].numpy())
        assert b["mask"].sum() > 0, "the same object is pasted whatever the shift"
        seen.add((dy, dx))
        assert np.array_equal(moved[i]["frames"].numpy(), b["frames"].numpy()), "reproducible"
    assert len(seen) > 3, "shifts vary between samples"
    with pytest.raises(ConfigError, match="grid_shift"):
        TrainingClips(segs, synthesizer, fraction=1.0, max_shift=-1)


def test_write_examples(tmp_path, synth):
    synthesizer, videos = synth
    ds = TrainingClips([Segment("a", videos[0], 0)], synthesizer, 0.25)
    paths = write_anomaly_examples(ds, tmp_path, 3)
    assert len(paths) == 3 and all(p.stat().st_size > 0 for p in paths)
    assert ds.fraction == 0.25


def _pasted_height(synthesizer, obj, seed):
    """Rows the object covers when the synthesizer pastes it (one frame of its trajectory)."""
    [(_, _, region)] = synthesizer._render(obj, (0,), synthesizer._motion(obj, np.random.default_rng(seed)))
    rows = np.flatnonzero(region.any(axis=1))
    return rows[-1] - rows[0] + 1 if rows.size else 0


def test_native_size_keeps_footage_objects_at_their_own_scale(synth):
    """native_size=1: footage objects are pasted at 0.8-1.25x their cut-out height, not at a drawn size."""
    _, videos = synth
    cfg = SyntheticConfig(max_objects=1, footage_objects=1.0, min_size=0.9, max_size=0.95, native_size=1.0)
    native, drawn = AnomalySynthesizer(videos, cfg), AnomalySynthesizer(videos, replace(cfg, native_size=0.0))
    frame_h = videos[0].shape[1]
    for seed in range(6):
        obj = native.sample_object(np.random.default_rng(seed))
        assert obj.native and not drawn.sample_object(np.random.default_rng(seed)).native
        # rotation (up to 30 degrees) stretches the box a little; frame edges may cut it
        assert 0 < _pasted_height(native, obj, seed) <= 1.25 * 1.5 * obj.mask.shape[0] + 2
        # the drawn height is 0.9-0.95 of the frame: at least half of it stays inside the frame
        assert _pasted_height(drawn, replace(obj, native=False), seed) >= 0.5 * 0.9 * frame_h


def test_native_size_off_leaves_the_default_random_stream_alone(synth):
    _, videos = synth
    a = AnomalySynthesizer(videos, SyntheticConfig(max_objects=1))
    b = AnomalySynthesizer(videos, SyntheticConfig(max_objects=1, native_size=0.0))
    clean = {o: videos[0][10 + o] for o in frame_offsets()}
    for seed in range(4):
        pa, ma = a.paste(clean, np.random.default_rng(seed))
        pb, mb = b.paste(clean, np.random.default_rng(seed))
        assert np.array_equal(ma, mb) and all(np.array_equal(pa[o], pb[o]) for o in frame_offsets())


@pytest.mark.parametrize("share", [0.3, 0.05, 1.0])
def test_speeds_are_drawn_between_the_floor_and_max_speed(synth, share):
    """min_speed_share sets the slowest object: speeds fill [share, 1] x max_speed x width, no more."""
    _, videos = synth
    synthesizer = AnomalySynthesizer(videos, SyntheticConfig(max_objects=1, max_speed=0.08, min_speed_share=share))
    obj = synthesizer.procedural_object(np.random.default_rng(0))
    top = 0.08 * videos[0].shape[2]
    speeds = [math.hypot(m.vx, m.vy) for m in (synthesizer._motion(obj, np.random.default_rng(s)) for s in range(200))]
    assert share * top - 1e-9 <= min(speeds) and max(speeds) <= top + 1e-9
    assert min(speeds) < (share + 0.05 * (1 - share)) * top + 1e-9  # the floor is reached, not just respected


def _box_mask(box, shape):
    y0, y1, x0, x1 = box
    out = np.zeros(shape, bool)
    out[y0:y1, x0:x1] = True
    return out


def test_speed_up_puts_far_frames_inside_the_moving_boxes_only(synth):
    """Temporal anomalies: frames t-g and t+g take frames t-3g and t+3g's pixels inside each moving box;
    frame t, the gradient frames and everything outside the boxes stay; the mask is the boxes."""
    _, videos = synth
    video, t, g = videos[0], 12, 3
    frames = {o: video[t + o] for o in frame_offsets(g)}
    far = {-1: video[t - 3 * g], 1: video[t + 3 * g]}
    out, mask = speed_up(frames, far, g, np.random.default_rng(0), most=2)
    rng = np.random.default_rng(0)
    boxes = moving_boxes(far[-1], frames[0], far[1], rng, int(rng.integers(1, 3)))  # speed_up's draws, in order
    assert boxes and np.array_equal(mask, np.logical_or.reduce([_box_mask(b, mask.shape) for b in boxes]))
    for y0, y1, x0, x1 in boxes:
        assert mask[y0:y1, x0:x1].all()
        assert np.array_equal(out[-g][y0:y1, x0:x1], far[-1][y0:y1, x0:x1])
        assert np.array_equal(out[g][y0:y1, x0:x1], far[1][y0:y1, x0:x1])
    assert np.array_equal(out[-g][~mask], frames[-g][~mask]) and np.array_equal(out[g][~mask], frames[g][~mask])
    assert not np.array_equal(out[-g], frames[-g]), "a walker moved between t-9 and t-3: the region changes"
    assert all(out[o] is frames[o] for o in (-1, 0, 1))
    assert np.array_equal(frames[-g], video[t - g]), "the input frames are not modified in place"
    still = {o: video[0] for o in frame_offsets(g)}
    out, mask = speed_up(still, {-1: video[0], 1: video[0]}, g, np.random.default_rng(0), most=2)
    assert not mask.any() and all(np.array_equal(out[o], video[0]) for o in out), "nothing moves: no anomaly"


def test_temporal_anomalies_in_samples_only_where_asked(synth):
    """train.synthetic.temporal: samples without a pasted object get sped-up regions (their target stays
    the clean frame t), never where t-3g or t+3g leaves the segment, never with fraction 0 (the student
    stage), and the default (0) leaves every sample as it was without them."""
    _, videos = synth
    segs = [Segment("a", videos[0], 0)]
    on = AnomalySynthesizer(videos, SyntheticConfig(max_objects=1, temporal=1.0))
    ds = TrainingClips(segs, on, fraction=1e-9, seed=3)
    inside = [i for i in range(len(ds)) if 9 <= i <= len(videos[0]) - 1 - 9]
    assert all(ds[i]["mask"].any() for i in inside)
    assert not any(ds[i]["mask"].any() for i in range(len(ds)) if i not in inside)
    s = ds[inside[0]]
    assert np.array_equal(s["target"].numpy().transpose(1, 2, 0), videos[0][inside[0]])
    assert np.array_equal(s["frames"][1].numpy(), videos[0][inside[0]])
    assert not any(TrainingClips(segs, on, fraction=0.0, seed=3)[i]["mask"].any() for i in inside)
    # off (the default): a sample without a pasted object draws its shift right after the paste draw, as
    # before temporal anomalies existed; one draw more would move it
    off = TrainingClips(segs, AnomalySynthesizer(videos, SyntheticConfig(max_objects=1)), 0.5, seed=3, max_shift=3)
    unpasted = 0
    for i in range(len(off)):
        rng = np.random.default_rng((3, 0, i))
        if rng.random() < 0.5:
            continue
        dy, dx = (int(v) for v in rng.integers(0, 4, size=2))
        expected = [shift_image(videos[0][min(max(i + o, 0), len(videos[0]) - 1)], dy, dx) for o in (-3, 0, 3)]
        assert np.array_equal(off[i]["frames"].numpy(), np.stack(expected)) and not off[i]["mask"].any()
        unpasted += 1
    assert unpasted > 5


@pytest.mark.parametrize("bad, message", [
    ({"native_size": 1.5}, r"native_size must be in \[0, 1\], got 1.5"),
    ({"min_speed_share": 1.2}, r"min_speed_share must be in \[0, 1\], got 1.2"),
    ({"fraction": -0.1}, "fraction must be in"),
    ({"min_size": 0.4, "max_size": 0.2}, "min_size <= max_size"),
    ({"max_objects": 0}, "max_objects must be >= 1"),
    ({"temporal": 1.5}, r"temporal must be in \[0, 1\], got 1.5"),
    ({"temporal_factor": 1}, "temporal_factor must be 2 or more, got 1"),
])
def test_bad_synthetic_settings_are_refused(synth, bad, message):
    _, videos = synth
    with pytest.raises(ConfigError, match=message):
        AnomalySynthesizer(videos, SyntheticConfig(**bad))
