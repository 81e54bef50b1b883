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


def test_ucsd_ground_truth_that_does_not_fit_the_folders(tmp_path):
    """Ranges past a video's end mark up to its last frame; a file without gt_frame entries, or with
    more entries than TestNNN folders, is an error naming it."""
    write_frame_folder(tmp_path, "Test001", scene_frames(10), ext=".tif")
    m = tmp_path / "UCSDped2.m"
    m.write_text("TestVideoFile{end+1}.gt_frame = [9:12];\n")
    assert read_test_set(tmp_path)[1][0].labels.tolist() == [0] * 8 + [1, 1]
    m.write_text("TestVideoFile{end+1}.gt_frame = [9:12];\nTestVideoFile{end+1}.gt_frame = [1:2];\n")
    with pytest.raises(DataError, match=r"UCSDped2\.m: 2 ground-truth entries for 1 TestNNN folders"):
        read_test_set(tmp_path)
    m.write_text("% nothing here\n")
    with pytest.raises(DataError, match=r"UCSDped2\.m: no gt_frame entries found"):
        read_test_set(tmp_path)


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


def test_avenue_labels_without_their_video_or_no_labels_at_all(tmp_path):
    (tmp_path / "testing_videos").mkdir()
    write_video(tmp_path / "testing_videos" / "01.mp4", scene_frames(8))
    (tmp_path / "testing_label_mask").mkdir()
    with pytest.raises(DataError, match=r"testing_label_mask: no N_label\.mat files"):
        read_test_set(tmp_path)
    (tmp_path / "testing_label_mask" / "2_label.mat").write_bytes(b"")
    with pytest.raises(DataError, match=r"2_label\.mat: no testing video 2"):
        read_test_set(tmp_path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, {"other": np.zeros(3)}])
def test_an_avenue_label_file_that_is_not_one_is_refused_naming_it(tmp_path, content):
    from scipy.io import savemat

    (tmp_path / "testing_videos").mkdir()
    write_video(tmp_path / "testing_videos" / "01.mp4", scene_frames(8))
    (tmp_path / "testing_label_mask").mkdir()
    mat = tmp_path / "testing_label_mask" / "1_label.mat"
    mat.write_bytes(content) if isinstance(content, bytes) else savemat(str(mat), content)
    with pytest.raises(DataError, match=r"1_label\.mat: not an Avenue label file"):
        read_test_set(tmp_path)


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
    with pytest.raises(DataError, match="nope: no such folder"):
        read_test_set(tmp_path / "nope")
    with pytest.raises(DataError, match="unknown layout 'ped3'; choose auto or one of ped2, ucsd"):
        read_test_set(tmp_path, layout="ped3")
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
    (tmp_path / "labels" / "README.md").write_text("# how these were labelled\n")  # not a label file
    _, videos = read_test_set(tmp_path)
    from model.config import preset
    from model.network import AEDMAE

    net = AEDMAE(preset("tiny")[0]).eval()
    with pytest.raises(DataError, match="9 frames but 7 labels"):
        score_test_set(net, videos, FrameCache(tmp_path / "cache"), progress=False)


def _write_labels(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content)


@pytest.mark.parametrize(("name", "content"), [
    ("a.txt", "0\n1\n-1\n"), ("a.txt", "0 1 300"), ("a.txt", "0 1 1.0"), ("a.txt", "\n"),
    ("a.npy", np.array([0, 0.5, 1.0])), ("a.npy", np.array([0, np.nan])), ("a.npy", np.array(["0", "1"])),
    ("a.npy", np.array([None, 1], dtype=object)), ("a.npy", b"not an array"), ("a.npy", np.array([0, 2])),
])
def test_a_label_that_is_not_exactly_0_or_1_is_refused_naming_the_file(tmp_path, name, content):
    """Not rounded (0.5 -> 0), wrapped (-1 -> 255, an overflow before) or loaded as pickled objects."""
    write_frame_folder(tmp_path / "test", "a", scene_frames(3))
    (tmp_path / "labels").mkdir()
    _write_labels(tmp_path / "labels" / name, content)
    with pytest.raises(DataError, match=r"labels.a\.(txt|npy): labels must be .*0/1 values, one per frame"):
        read_test_set(tmp_path)


@pytest.mark.parametrize("content", [np.array([0.0, 1.0, 1.0]), np.array([False, True, True]),
                                     np.array([[0], [1], [1]], np.int32)])
def test_npy_labels_may_be_floats_booleans_or_a_column(tmp_path, content):
    write_frame_folder(tmp_path / "test", "a", scene_frames(3))
    (tmp_path / "labels").mkdir()
    np.save(tmp_path / "labels" / "a.npy", content)
    labels = read_test_set(tmp_path)[1][0].labels
    assert labels.dtype == np.uint8 and labels.tolist() == [0, 1, 1]


@pytest.mark.data
def test_shared_ped2_dev_split():
    root = require_shared("ped2")
    layout, videos = read_test_set(root)
    assert layout == "ped2" and [v.name for v in videos] == ["01", "03", "05", "07", "09", "11"]
    v01 = videos[0]
    assert len(v01.labels) == len(v01.source.frames) == 180
    assert v01.labels[:60].sum() == 0 and v01.labels[60:].all()  # 01: frames 61-180 abnormal
