import numpy as np
import pytest

from model.datasets import read_test_set
from model.errors import DataError
from model.evaluation import score_test_set
from model.frames import FrameCache
from tests.conftest import require_shared, scene_frames, write_frame_folder, write_video


def _labels(n, start):
    y = np.zeros(n, np.uint8)
    y[start:] = 1
    return y


def test_ped2_layout(tmp_path):
    write_frame_folder(tmp_path / "test", "01", scene_frames(9))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "01.txt").write_text("\n".join(map(str, _labels(9, 4))) + "\n")
    layout, videos = read_test_set(tmp_path)
    assert layout == "ped2" and videos[0].name == "01" and videos[0].labels.tolist() == [0] * 4 + [1] * 5


def test_ucsd_layout(tmp_path):
    for i in (1, 2):
        write_frame_folder(tmp_path, f"Test{i:03d}", scene_frames(10), ext=".tif")
    (tmp_path / "UCSDped2.m").write_text(
        "TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [3:5];\nTestVideoFile{end+1}.gt_frame = [1:2, 9:10];\n")
    layout, videos = read_test_set(tmp_path)
    assert layout == "ucsd"
    assert videos[0].labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert videos[1].labels.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]


def test_avenue_layout(tmp_path):
    from scipy.io import savemat

    (tmp_path / "testing_videos").mkdir()
    write_video(tmp_path / "testing_videos" / "01.mp4", scene_frames(8))
    (tmp_path / "testing_label_mask").mkdir()
    masks = np.empty((1, 8), dtype=object)
    for i in range(8):
        masks[0, i] = np.zeros((4, 4), np.uint8) + (1 if i >= 5 else 0)
    savemat(str(tmp_path / "testing_label_mask" / "1_label.mat"), {"volLabel": masks})
    layout, videos = read_test_set(tmp_path)
    assert layout == "avenue" and videos[0].name == "01"
    assert videos[0].labels.tolist() == [0] * 5 + [1] * 3


def test_shanghai_layout(tmp_path):
    write_frame_folder(tmp_path / "testing" / "frames", "01_0014", scene_frames(8), ext=".jpg")
    (tmp_path / "test_frame_mask").mkdir()
    np.save(tmp_path / "test_frame_mask" / "01_0014.npy", _labels(8, 2))
    layout, videos = read_test_set(tmp_path)
    assert layout == "shanghai" and videos[0].labels.sum() == 6


def test_generic_layout_with_npy(tmp_path):
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "cam.mp4", scene_frames(8))
    (tmp_path / "labels").mkdir()
    np.save(tmp_path / "labels" / "cam.npy", _labels(8, 6))
    layout, videos = read_test_set(tmp_path)
    assert layout == "generic" and videos[0].labels.sum() == 2


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="unknown test-set layout"):
        read_test_set(tmp_path)
    write_frame_folder(tmp_path / "test", "01", scene_frames(9))
    write_frame_folder(tmp_path / "test", "02", scene_frames(9))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "01.txt").write_text("0\n" * 7)
    with pytest.raises(DataError, match=r"no labels for video\(s\) 02"):
        read_test_set(tmp_path)
    (tmp_path / "labels" / "02.txt").write_text("0\n1\nx\n")
    with pytest.raises(DataError, match="0/1 values"):
        read_test_set(tmp_path)
    (tmp_path / "labels" / "02.txt").write_text("0\n" * 9)
    _, videos = read_test_set(tmp_path)
    from model.config import preset
    from model.network import AEDMAE

    net = AEDMAE(preset("tiny")[0]).eval()
    with pytest.raises(DataError, match="9 frames but 7 labels"):
        score_test_set(net, videos, FrameCache(tmp_path / "cache"), progress=False)


@pytest.mark.data
def test_shared_ped2_dev_split():
    root = require_shared("ped2")
    layout, videos = read_test_set(root)
    assert layout == "ped2" and [v.name for v in videos] == ["01", "03", "05", "07", "09", "11"]
    v01 = videos[0]
    assert len(v01.labels) == len(v01.source.frames) == 180
    assert v01.labels[:60].sum() == 0 and v01.labels[60:].all()  # 01: frames 61-180 abnormal
