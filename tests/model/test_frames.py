import os
import warnings

import cv2
import numpy as np
import pytest

from model.errors import DataError
from model.frames import FrameCache, declared_fps, decode, discover, natural_key, to_model_frame, to_uint8
from tests.conftest import (
    assert_durable,
    record_disk_ops,
    require_shared,
    scene_frames,
    write_frame_folder,
    write_video,
)


def test_natural_sort(tmp_path):
    frames = scene_frames(12)
    folder = write_frame_folder(tmp_path, "v", frames)
    (src,) = discover(folder)
    assert [f.stem for f in src.frames] == [str(i) for i in range(12)]
    assert sorted(["f10", "f2", "f1"], key=natural_key) == ["f1", "f2", "f10"]
    assert sorted(["B2", "a10", "a2"], key=natural_key) == ["a2", "a10", "B2"]  # letters in any case


def test_suffixes_in_capitals_are_frames_and_videos(tmp_path):
    """Cameras and Windows tools write 0001.JPG and CLIP.MP4."""
    folder = write_frame_folder(tmp_path / "root", "v", scene_frames(8), ext=".PNG")
    write_video(tmp_path / "root" / "CLIP.MP4", scene_frames(8))
    assert [(s.name, len(s.frames)) for s in discover(tmp_path / "root")] == [("CLIP", 0), ("v", 8)]
    assert len(discover(folder)[0].frames) == 8


def test_discover_root_of_videos_and_files(tmp_path):
    write_frame_folder(tmp_path / "root", "b", scene_frames(8))
    write_video(tmp_path / "root" / "a.mp4", scene_frames(10))
    names = [s.name for s in discover(tmp_path / "root")]
    assert names == ["a", "b"]
    (video,) = discover(tmp_path / "root" / "a.mp4")
    frames = decode(video, (24, 36), 3)
    assert frames.shape == (10, 24, 36, 3) and frames.dtype == np.uint8


def test_grayscale_source_to_rgb_and_gray(tmp_path):
    gray = scene_frames(8, channels=1)
    (src,) = discover(write_frame_folder(tmp_path, "g", gray))
    rgb = decode(src, (48, 72), 3)
    assert rgb.shape == (8, 48, 72, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert np.array_equal(decode(src, (48, 72), 1)[..., 0], gray[..., 0])


def test_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        discover(tmp_path / "nope")
    (tmp_path / "empty" / "v1").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no frames and no videos.*v1"):
        discover(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not a video file"):
        discover(tmp_path / "notes.txt")


def test_unreadable_image_names_the_file(tmp_path):
    folder = write_frame_folder(tmp_path, "v", scene_frames(8))
    (folder / "3.png").write_bytes(b"not a png")
    (src,) = discover(folder)
    with pytest.raises(DataError, match=r"3\.png: unreadable image"):
        decode(src, (48, 72), 3)


def test_corrupt_video_names_the_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    (src,) = discover(bad)
    with pytest.raises(DataError, match=r"bad\.mp4"):
        decode(src, (48, 72), 3)


def test_short_video(tmp_path):
    (src,) = discover(write_frame_folder(tmp_path, "short", scene_frames(6)))
    with pytest.raises(DataError, match="6 frames; a video needs at least 7"):
        decode(src, (48, 72), 3)


def test_mixed_frame_sizes(tmp_path):
    folder = write_frame_folder(tmp_path, "mixed", scene_frames(8))
    cv2.imwrite(str(folder / "5.png"), np.zeros((10, 10, 3), np.uint8))
    (src,) = discover(folder)
    with pytest.raises(DataError, match=r"5\.png: frame size 10x10 differs"):
        decode(src, (48, 72), 3)


def test_deep_frames_keep_one_brightness_scale(tmp_path):
    """16-bit and float frames map to 8 bits by one fixed rule, never by each frame's own maximum: a
    dark frame stays dark beside a bright one (stretching would make both white), and a pixel type
    without a sensible mapping is an error naming the file."""
    folder = tmp_path / "deep"
    folder.mkdir()
    levels = [1000, 1000, 1000, 40000, 65535, 1000, 1000]
    for i, level in enumerate(levels):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((8, 12), level, np.uint16))
    (src,) = discover(folder)
    assert decode(src, (8, 12), 1)[:, 0, 0, 0].tolist() == [4, 4, 4, 156, 255, 4, 4]  # round(level / 257)
    floats = tmp_path / "float"
    floats.mkdir()
    for i in range(7):
        cv2.imwrite(str(floats / f"{i}.tiff"), np.full((8, 12), [0.0, 0.5, 1.0, 0.75, 0.0, 0.25, 0.1][i], np.float32))
    (src,) = discover(floats)
    assert decode(src, (8, 12), 1)[:, 0, 0, 0].tolist() == [0, 128, 255, 191, 0, 64, 26]
    cv2.imwrite(str(floats / "3.tiff"), np.full((8, 12), 200.0, np.float32))  # a 0..255 float frame: not guessed
    with pytest.raises(DataError, match=r"3\.tiff: floating-point pixels must lie in 0\.\.1, these span 200\.\.200"):
        decode(src, (8, 12), 1)
    signed = tmp_path / "signed"
    signed.mkdir()
    for i in range(7):
        cv2.imwrite(str(signed / f"{i}.tiff"), np.full((8, 12), 7, np.int32))
    (src,) = discover(signed)
    with pytest.raises(DataError, match=r"0\.tiff: pixel type int32 is not supported"):
        decode(src, (8, 12), 1)


def test_float_pixels_that_are_not_a_number_are_black():
    image = np.array([[0.5, np.nan], [1.0, 0.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN reaches the cast to uint8
        assert to_uint8(image).tolist() == [[128, 0], [255, 0]]


def test_frames_shrink_by_the_mean_of_each_area():
    """8x8 -> 2x2 takes the mean of each 4x4 block (values in steps of 16, so every mean is whole);
    sampling between pixels would see 4 of the 16."""
    image = (np.random.default_rng(0).integers(0, 16, (8, 8)) * 16).astype(np.uint8)
    blocks = image.reshape(2, 4, 2, 4).mean(axis=(1, 3))
    assert to_model_frame(image, (2, 2), 1)[..., 0].tolist() == blocks.astype(np.uint8).tolist()


class _Declares:
    def __init__(self, fps: float) -> None:
        self.fps = fps

    def get(self, prop: int) -> float:
        assert prop == cv2.CAP_PROP_FPS
        return self.fps


def test_a_declared_frame_rate_is_believed_between_0_and_1000():
    """0 (not said), NaN and 90000 (a stream's clock rate, not its frame rate) are not frame rates."""
    assert [declared_fps(_Declares(f)) for f in (25.0, 999.0, 0.0, -1.0, float("nan"), 90000.0)] == [
        25.0, 999.0, None, None, None, None]


def test_cache_decodes_once(tmp_path, monkeypatch):
    import model.frames as frames_mod

    (src,) = discover(write_frame_folder(tmp_path, "v", scene_frames(8)))
    cache = FrameCache(tmp_path / "cache")
    first = np.array(cache.load(src, (24, 36), 3))
    monkeypatch.setattr(frames_mod, "decode", lambda *a: pytest.fail("decoded twice"))
    again = cache.load(src, (24, 36), 3)
    assert isinstance(again, np.memmap) and np.array_equal(first, again)
    assert cache.path_for(src, (24, 36), 3) != cache.path_for(src, (24, 36), 1)


def test_cache_entries_are_written_durably_and_renewed_when_a_frame_is_touched(tmp_path, monkeypatch):
    """A new entry is synced before its rename and its folder after (a power cut leaves no empty entry
    to load); a frame rewritten at the same size (only its modification time differs) is a new entry."""
    ops = record_disk_ops(monkeypatch)
    (src,) = discover(write_frame_folder(tmp_path, "v", scene_frames(8)))
    cache = FrameCache(tmp_path / "cache")
    cache.load(src, (24, 36), 3)
    first = cache.path_for(src, (24, 36), 3)
    assert_durable(ops, first)
    stat = src.frames[3].stat()
    os.utime(src.frames[3], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache.path_for(src, (24, 36), 3) != first


def test_cache_file_names_keep_only_portable_characters(tmp_path):
    (src,) = discover(write_frame_folder(tmp_path, "gate 1: east", scene_frames(8)))
    assert FrameCache(tmp_path).path_for(src, (24, 36), 3).name.startswith("gate_1__east-24x36x3-")


@pytest.mark.data
def test_ped2_training_layout():
    root = require_shared("ped2", "train")
    sources = discover(root)
    assert [s.name for s in sources] == [f"{i:02d}" for i in range(1, 17)]
    assert sum(len(s.frames) for s in sources) == 2550
