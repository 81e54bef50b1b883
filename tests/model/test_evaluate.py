import json
import re

import numpy as np
import pytest

from model.calibration import SCENE_ALERT_SHARE, SCENE_CHECK_FRAMES
from model.metrics import gaussian_smooth
from service.cli import main
from tests.conftest import avenue_clip, scene_frames


@pytest.mark.slow
def test_train_calibrate_evaluate_end_to_end(footage, labelled_test_set, tmp_path, capsys):
    out = tmp_path / "run"
    cache = str(tmp_path / "cache")
    assert main(["train", "--data", str(footage), "--out", str(out), "--preset", "tiny", "--no-progress",
                 "--cache-dir", cache, "--set", "train.max_steps_per_epoch=3"]) == 0
    meta = json.loads((out / "model.json").read_text())
    cal = meta["calibration"]
    assert cal["threshold"] > cal["median"] > 0 and cal["held_out"] is False
    assert len(meta["token_stats"]["teacher_error"]) == 4 * 6

    ev = tmp_path / "eval"
    # an example video the test set does not hold is refused before any scoring, naming the ones it has
    assert main(["evaluate", "--data", str(labelled_test_set), "--model", str(out), "--out", str(ev),
                 "--cache-dir", cache, "--no-progress", "--examples", "b", "c"]) == 2
    assert "--examples c: no such test video" in capsys.readouterr().err and not ev.exists()
    assert main(["evaluate", "--data", str(labelled_test_set), "--model", str(out), "--out", str(ev),
                 "--cache-dir", cache, "--no-progress", "--ablations", "--examples", "b"]) == 0
    printed = capsys.readouterr().out
    assert "micro" in printed and "single class" in printed
    metrics = json.loads((ev / "metrics.json").read_text())
    for key in ("micro_auc", "macro_auc", "per_video", "frames", "model", "settings"):
        assert key in metrics
    assert metrics["frames"] == 28 and metrics["per_video"]["a"] is None
    assert 0 <= metrics["micro_auc"] <= 1 and len(metrics["ablations"]) == 5
    assert "detection_online" in metrics
    ref = metrics["reference_protocol"]
    assert set(ref) == {"score", "teacher_error", "constant"} and all(0 <= v <= 1 for v in ref.values())
    assert "reference post-processing" in printed and "sigma 282" in metrics["settings"]["reference_protocol"]
    for name in ("roc.png", "timelines.png", "heatmaps_b.png", "scores.csv"):
        assert (ev / name).stat().st_size > 0
    rows = (ev / "scores.csv").read_text().splitlines()
    assert len(rows) == 29 and rows[0].startswith("video,frame,label,score")
    calibrated = np.array([float(r.split(",")[6]) for r in rows[1:]])
    assert np.all((calibrated >= 0) & (calibrated <= 1))
    assert calibrated[12 + 10 :].mean() > calibrated[:12].mean(), "the square scores above normal frames"

    # recalibrating with another scoring config writes a new, loadable checkpoint
    recal = tmp_path / "recal"
    assert main(["calibrate", "--model", str(out), "--data", str(footage), "--out", str(recal), "--cache-dir", cache,
                 "--no-progress", "--set", "model.scoring.reduction=topk"]) == 0
    assert json.loads((recal / "model.json").read_text())["model"]["scoring"]["reduction"] == "topk"
    # one video (one camera's recording): its false-alarm rate is cross-validated over its quarters
    capsys.readouterr()
    assert main(["calibrate", "--model", str(out), "--data", str(footage / "01"), "--out", str(recal),
                 "--cache-dir", cache, "--no-progress"]) == 0
    cal = json.loads((recal / "model.json").read_text())["calibration"]
    assert cal["normal_frames"] == 24 and cal["cross_validated_over"] == "quarters of one video"
    assert 0 <= cal["false_alarm_rate"] <= 1 and "cross-validated over quarters of one video" in capsys.readouterr().out
    assert main(["calibrate", "--model", str(out), "--data", str(footage), "--out", str(recal), "--cache-dir", cache,
                 "--set", "model.patch_size=4"]) == 2


def test_score_a_video_without_labels(tiny_checkpoint, tmp_path, capsys):
    import cv2

    from tests.conftest import write_video

    frames = scene_frames(20, 60, 90, seed=3)
    video = write_video(tmp_path / "cam.mp4", frames, fps=10)
    out = tmp_path / "scored"
    assert main(["score", str(video), "--model", str(tiny_checkpoint), "--out", str(out), "--no-progress"]) == 0
    assert "20 frames scored" in capsys.readouterr().out
    rows = json.loads((out / "scores.json").read_text())
    assert [r["frame"] for r in rows] == list(range(20))
    assert [r["time_s"] for r in rows][:3] == [0.0, 0.1, 0.2]  # the footage's own clock (10 fps)
    assert all(0 <= r["calibrated"] <= 1 and 0 <= r["smoothed"] <= 1 for r in rows)
    # a camera's smoothing (sigma 0.2 s, the whole window) at the footage's 10 fps: sigma 2 frames
    calibrated = np.array([r["calibrated"] for r in rows])
    assert np.allclose([r["smoothed"] for r in rows], gaussian_smooth(calibrated, 2.0), atol=1e-6)
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20 and int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == 60 + 60
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10)  # plays at the footage's speed, not a fixed 25
    assert (out / "timeline.png").stat().st_size > 0 and (out / "scores.csv").read_text().count("\n") == 21
    assert main(["score", str(tmp_path / "missing.mp4"), "--model", str(tiny_checkpoint), "--out", str(out)]) == 2


def test_score_every_third_frame_gives_those_frames_full_rate_scores(tiny_checkpoint, tmp_path, capsys):
    """--every 3 scores frames 0, 3, 6, ... from the frames 3 before and after, which it keeps: each raw
    score is the full-rate one (but for the last frames, whose look-ahead the end clamps differently);
    the smoothing and the annotated video run at a third of the footage's rate."""
    import cv2

    from tests.conftest import write_video

    video = write_video(tmp_path / "cam.avi", scene_frames(31, 60, 90, seed=3), fourcc="MJPG", fps=12)
    runs = {}
    for every in (1, 3):
        out = tmp_path / f"every{every}"
        assert main(["score", str(video), "--model", str(tiny_checkpoint), "--out", str(out), "--no-progress",
                     "--every", str(every)]) == 0
        runs[every] = json.loads((out / "scores.json").read_text())
    assert "11 frames scored (one in 3 of 31)" in capsys.readouterr().out
    full = {r["frame"]: r for r in runs[1]}
    assert [r["frame"] for r in runs[3]] == list(range(0, 31, 3))
    assert [r["time_s"] for r in runs[3]][:2] == [0.0, 0.25]  # frame 3 at 12 fps
    for key in ("score", "teacher_error", "discrepancy", "calibrated"):
        assert [r[key] for r in runs[3] if r["frame"] <= 27] == pytest.approx(
            [full[r["frame"]][key] for r in runs[3] if r["frame"] <= 27], rel=1e-5), key
    # a camera's smoothing (sigma 0.2 s, the whole window) at 4 scored frames a second: sigma 0.8 frames
    calibrated = np.array([r["calibrated"] for r in runs[3]])
    assert np.allclose([r["smoothed"] for r in runs[3]], gaussian_smooth(calibrated, 0.8), atol=1e-6)
    cap = cv2.VideoCapture(str(tmp_path / "every3" / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 11 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(4)
    assert main(["score", str(video), "--out", str(tmp_path / "x"), "--every", "2"]) == 2  # not the model's gap, 3
    assert "every=2: 1 (every frame) or 3" in capsys.readouterr().err


def test_score_warns_when_a_file_decodes_fewer_frames_than_it_declares(tiny_checkpoint, tmp_path, capsys):
    """A file cut short (a copy interrupted, a recorder that crashed) decodes until the damage: the
    frames before it are scored, and the user is told the rest is missing."""
    from tests.conftest import write_video

    whole = write_video(tmp_path / "cam.avi", scene_frames(40, 60, 90, seed=3), fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])  # the header still says 40 frames
    assert main(["score", str(cut), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    scored = len(json.loads((tmp_path / "o" / "scores.json").read_text()))
    assert 7 <= scored < 40 and f"declares 40 frames but only {scored} decoded" in captured.err
    assert main(["score", str(whole), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "w"),
                 "--no-progress"]) == 0
    assert "declares" not in capsys.readouterr().err


def test_score_scores_each_side_of_a_scene_cut_as_a_clip_of_its_own(tiny_checkpoint, tmp_path, capsys):
    """A file spliced from two scenes scores, frame for frame, as its two parts scored alone: no window
    t-3..t+3 and no smoothing window spans the cut (as for the service's cameras)."""
    from tests.conftest import write_video

    first, second = scene_frames(16, 60, 90, seed=3), scene_frames(16, 60, 90, seed=8)
    second[:, :, 45:] += 50  # the other scene has a bright wall (the generated textures alone are faint)
    rows = {}
    for name, frames in (("first", first), ("second", second), ("spliced", np.concatenate([first, second]))):
        video = write_video(tmp_path / f"{name}.avi", frames, fourcc="MJPG")
        assert main(["score", str(video), "--model", str(tiny_checkpoint), "--out", str(tmp_path / name),
                     "--no-progress"]) == 0
        rows[name] = json.loads((tmp_path / name / "scores.json").read_text())
    out = capsys.readouterr().out
    assert out.count("scene cuts before frames [16]") == 1
    assert [r["frame"] for r in rows["spliced"] if r["cut"]] == [16] and not any(r["cut"] for r in rows["first"])
    for key in ("score", "calibrated", "smoothed"):
        assert [r[key] for r in rows["spliced"]] == pytest.approx([r[key] for r in rows["first"] + rows["second"]],
                                                                 rel=1e-5), key
    assert main(["score", str(tmp_path / "spliced.avi"), "--model", str(tiny_checkpoint), "--out",
                 str(tmp_path / "off"), "--no-progress", "--scene-cut-change", "0"]) == 0
    joined = json.loads((tmp_path / "off" / "scores.json").read_text())
    assert not any(r["cut"] for r in joined)
    assert [r["score"] for r in joined] != pytest.approx([r["score"] for r in rows["spliced"]], rel=1e-5)


def test_score_warns_when_the_footage_is_not_the_models_scene(tmp_path, capsys):
    """The shipped Ped2 model on Avenue footage alerts on most frames: ``score`` says the footage does not
    fit the model's calibration and how to fix it (model.calibration.scene_check). The shipped model on
    its own scene, mostly abnormal test videos included, does not warn (tests/streams/test_stream_shipped.py)."""
    video = avenue_clip(tmp_path / "avenue.mp4", SCENE_CHECK_FRAMES + 5)
    assert main(["score", str(video), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    share = re.search(r"aedmae score: warning: ([0-9.]+)% of 105 frames are at or above the alert threshold", err)
    assert share and float(share.group(1)) >= 100 * SCENE_ALERT_SHARE, err
    assert "aedmae calibrate --data" in err


def test_timelines_shade_labels_only_where_there_are_labels():
    """`aedmae evaluate` shades the labelled abnormal frames; `aedmae score` has no labels, so its
    timeline has no such legend entry (it once drew an empty one from all-zero labels)."""
    from model.plots import _pyplot, timeline_figure

    score = np.linspace(0, 1, 30)
    labelled = {"v": {"labels": (score > 0.5).astype(int), "score": score, "smoothed": score, "cuts": np.array([12])}}
    unlabelled = {"v": {"score": score, "smoothed": score}}
    for series, threshold, expected in (
        (labelled, 0.5, ["labelled abnormal", "score", "smoothed", "alert threshold", "scene cut"]),
        (unlabelled, None, ["score", "smoothed"]),
    ):
        fig = timeline_figure(series, threshold)
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == expected
        _pyplot().close(fig)


def test_timelines_draw_source_frame_numbers_when_frames_were_skipped():
    """`aedmae score --every 3` scores source frames 0, 3, 6, ...: its timeline's x axis is those frame
    numbers (cuts are source frames too, drawn between the frame before and the cut's), ending at the last."""
    from model.plots import _pyplot, timeline_figure

    frames = np.arange(0, 60, 3)
    score = np.linspace(0, 1, len(frames))
    fig = timeline_figure({"v": {"score": score, "smoothed": score, "frames": frames, "cuts": np.array([30])}}, 0.5)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["score"].get_xdata(), frames)
    np.testing.assert_array_equal(lines["smoothed"].get_xdata(), frames)
    assert list(lines["scene cut"].get_xdata()) == [29.5, 29.5]
    assert ax.get_xlim() == (0.0, 57.0)
    _pyplot().close(fig)


def test_heatmap_strip_spreads_tiles_over_the_clip_with_red_captions_on_abnormal_frames(tmp_path):
    """At most ``count`` tiles (six by default) and one a frame, the first and last frame among them, each
    the frame itself where its heatmap is cold; a frame labelled abnormal gets its caption in red, a
    normal or unlabelled one in white."""
    import cv2

    from model.plots import heatmap_strip

    frames = np.stack([np.full((48, 64, 3), (30 * i, 100, 200 - 20 * i), np.uint8) for i in range(7)])
    cold, scores = np.zeros((7, 6, 8), np.float32), np.linspace(0, 1, 7)
    labels = np.array([0, 0, 0, 1, 1, 1, 1])

    def tiles(count, labels):
        strip = cv2.cvtColor(cv2.imread(str(heatmap_strip(frames, cold, scores, labels, 1.0, tmp_path / "s.png",
                                                          count))), cv2.COLOR_BGR2RGB)
        return [strip[:, k : k + 64] for k in range(0, strip.shape[1], 64)]

    def red(tile):
        top = tile[:20].astype(int)
        return bool(np.any((top[..., 0] > 200) & (top[..., 1] < 120) & (top[..., 2] < 120)))

    three = tiles(3, labels)
    assert len(three) == 3 and len(tiles(10, labels)) == 7
    for tile, i in zip(three, (0, 3, 6), strict=True):
        assert np.all(tile[24:] == frames[i][24:]), i
    assert [red(t) for t in three] == [False, True, True]
    assert not any(red(t) for t in tiles(3, None))
    assert np.any(three[0][:20].min(axis=-1) > 200), "a white caption"


def test_annotated_curve_shows_the_latest_frames_at_a_fixed_cost():
    """The strip under each annotated frame draws the latest `width` scores, one column a frame: deep
    into a video it is what the last `width` frames alone draw (drawing the whole history once made
    each frame's cost grow with the video), the newest frame at the right edge, red when it alerts."""
    from model.scorevideo import _curve

    rng = np.random.default_rng(0)
    history = list(rng.random(20_000) * 0.4)
    width = 64
    np.testing.assert_array_equal(_curve(history, width), _curve(history[-width:], width))
    quiet, alert = _curve([*history, 0.2], width), _curve([*history, 0.9], width)
    red = (alert[:, -1, 0] == 255) & (alert[:, -1, 2] == 60)
    assert red.any() and not ((quiet[:, -1, 0] == 255) & (quiet[:, -1, 2] == 60)).any()
    young = _curve([0.9, 0.9, 0.9], width)  # before the strip fills, the curve grows from the left
    assert ((young[:, :3, 0] == 255) & (young[:, :3, 2] == 60)).any() and (young[:, 4:, 0] != 255).all()
    lines = _curve([1.5, 1.5, -0.5, -0.5], width)  # out of range: drawn along the strip's edges, not off it
    assert lines[0, 0].tolist() == [255, 60, 60] and lines[-1, 3].tolist() == [90, 200, 255]


def test_score_reads_one_folder_of_frames_and_refuses_a_folder_of_several_videos(tiny_checkpoint, tmp_path):
    from model.errors import DataError
    from model.scorevideo import score_video
    from tests.conftest import write_frame_folder

    folder = write_frame_folder(tmp_path, "cam", scene_frames(12, 60, 90, seed=3))
    result = score_video(tiny_checkpoint, folder, tmp_path / "out", progress=False)
    assert result["frames"] == result["frames_declared"] == 12 and result["fps"] == 25.0
    assert result["decode_warning"] is None
    for name in ("a", "b"):
        write_frame_folder(tmp_path / "two", name, scene_frames(8, 60, 90))
    with pytest.raises(DataError, match=r"two: expected one video \(a file or a folder of frames\), found 2"):
        score_video(tiny_checkpoint, tmp_path / "two", tmp_path / "out2", progress=False)
