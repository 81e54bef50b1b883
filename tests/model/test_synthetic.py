import numpy as np
import pytest

from model.config import SyntheticConfig
from model.dataset import Segment, TrainingClips, motion_gradient, write_anomaly_examples
from model.synthetic import FRAME_OFFSETS, AnomalySynthesizer
from tests.conftest import scene_frames


@pytest.fixture
def synth():
    videos = [scene_frames(30, seed=1), scene_frames(30, seed=2)]
    return AnomalySynthesizer(videos, SyntheticConfig(max_objects=1, max_speed=0.08)), videos


@pytest.mark.parametrize("seed", range(12))
def test_mask_covers_exactly_the_pasted_pixels(synth, seed):
    synthesizer, videos = synth
    rng = np.random.default_rng(seed)
    clean = {o: videos[0][10 + o] for o in FRAME_OFFSETS}
    pasted, mask = synthesizer.paste(clean, rng)
    assert mask.any(), "an object must land in frame t"
    changed = np.any(pasted[0] != clean[0], axis=2)
    # nothing outside the mask changes; inside it, only pixels equal by chance may look unchanged
    assert not np.any(changed & ~mask)
    assert changed[mask].mean() > 0.5
    for o in FRAME_OFFSETS:  # the inputs were not modified in place
        assert np.array_equal(clean[o], videos[0][10 + o])


def test_object_moves_between_frames(synth):
    synthesizer, videos = synth
    moved = 0
    for seed in range(10):
        clean = {o: videos[0][10 + o] for o in FRAME_OFFSETS}
        pasted, _ = synthesizer.paste(clean, np.random.default_rng(seed))
        regions = [np.any(pasted[o] != clean[o], axis=2) for o in (-3, 0, 3)]
        centres = [np.argwhere(r).mean(axis=0) for r in regions if r.any()]
        if len(centres) == 3 and np.linalg.norm(centres[0] - centres[2]) > 1.0:
            moved += 1
    assert moved >= 7


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
    cv2.imwrite(str(tmp_path / "rgb.png"), rgba[:, :, :3])
    with pytest.raises(DataError, match="RGBA"):
        load_cutouts(tmp_path, 3)


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


def test_write_examples(tmp_path, synth):
    synthesizer, videos = synth
    ds = TrainingClips([Segment("a", videos[0], 0)], synthesizer, 0.25)
    paths = write_anomaly_examples(ds, tmp_path, 3)
    assert len(paths) == 3 and all(p.stat().st_size > 0 for p in paths)
    assert ds.fraction == 0.25
