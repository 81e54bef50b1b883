import json
import os
import re
from pathlib import Path

import pytest

from service.cli import main
from tests.conftest import write_frame_folder


def test_model_info_reference_json(capsys):
    assert main(["model-info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert abs(info["parameters"]["total"] - 3_042_690) / 3_042_690 < 0.01
    # METHOD.md: 5.34 GFLOP per frame for one pass at 320x640 with the student branch
    assert abs(info["gflops_per_frame"]["one_pass"] - 5.34) < 0.05
    assert info["gflops_per_frame"]["deployed"] == 2 * info["gflops_per_frame"]["one_pass"]


def test_train_on_one_video_then_model_info(footage, tmp_path, capsys):
    """One camera's single recording: its held-out tail is one segment, so the calibration's false-alarm
    rate is cross-validated over the tail's quarters (this run used to end in a traceback there)."""
    out = tmp_path / "run"
    rc = main(["train", "--data", str(footage / "01"), "--out", str(out), "--preset", "tiny", "--no-progress",
               "--cache-dir", str(tmp_path / "cache"), "--set", "train.max_steps_per_epoch=2"])
    assert rc == 0
    assert (out / "model.safetensors").exists() and (out / "train.log").read_text()
    printed = capsys.readouterr().out
    assert "cross-validated over quarters of one video" in printed and f"aedmae serve --model {out}" in printed
    assert main(["model-info", "--model", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["image_size"] == [32, 48]
    # the folder holds a run now: training there again without --resume would overwrite its state
    weights = (out / "model.safetensors").read_bytes()
    assert main(["train", "--data", str(footage / "01"), "--out", str(out), "--preset", "tiny"]) == 2
    assert "already holds an interrupted or finished run (train_state.pt): pass --resume" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == weights
    assert main(["train", "--data", str(footage / "01"), "--out", str(tmp_path / "typo"), "--preset", "tiny",
                 "--resume"]) == 2
    assert "no train_state.pt to resume from" in capsys.readouterr().err and not (tmp_path / "typo").exists()


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--preset", "tiny"])
    assert rc == 2
    assert "no such file or folder" in capsys.readouterr().err
    from tests.conftest import scene_frames

    write_frame_folder(tmp_path / "short", "v", scene_frames(5))
    rc = main(["train", "--data", str(tmp_path / "short"), "--out", str(tmp_path / "o"), "--preset", "tiny",
               "--cache-dir", str(tmp_path / "c")])
    assert rc == 2
    assert "needs at least 7" in capsys.readouterr().err
    rc = main(["train", "--data", str(tmp_path / "short"), "--out", str(tmp_path / "o"), "--preset", "tiny",
               "--set", "train.epochs_teacher=-1"])
    assert rc == 2
    assert "train.epochs_teacher must be >= 1, got -1" in capsys.readouterr().err  # an IndexError once
    for command, flag, value, message in (
            (["train", "--data", "x", "--out", "y"], "--eval-every", "0", "0: must be 1 or more"),
            (["score", "x", "--out", "y"], "--sigma-s", "-1", "-1: must be 0 or more"),
            (["evaluate", "--data", "x", "--out", "y"], "--sigma", "nan", "nan: must be 0 or more"),
            (["score", "x", "--out", "y"], "--delay-s", "-5", "-5: must be 0 or more"),
            (["score", "x", "--out", "y"], "--scene-cut-change", "-1", "-1: must be 0 or more"),
            (["score", "x", "--out", "y"], "--scene-cut-change", "10.5", "10.5: must be 10 or less"),  # as the server
            (["export", "onnx", "--out", "y.onnx"], "--max-batch", "0", "0: must be 1 or more"),
            (["export", "onnx"], "--out", "y.txt", "y.txt: the file's name must end in .onnx"),
            (["export", "onnx"], "--out", "runs/", "runs/: a folder; give the file's name, e.g. runs/model.onnx"),
            (["export", "tensorrt", "--onnx", "y.onnx"], "--out", "y.trt",
             "y.trt: the file's name must end in .engine"),
            (["anomalies", "--data", "x", "--out", "y"], "--count", "2.5", "'2.5' is not a whole number")):
        with pytest.raises(SystemExit) as exit_:  # argparse's usage error: exit 2, before any work
            main([*command, flag, value])
        assert exit_.value.code == 2 and f"argument {flag}: {message}" in capsys.readouterr().err
    for command in (["train", "--data", "x", "--out", "y"], ["anomalies", "--data", "x", "--out", "y"],
                    ["model-info"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--preset", "ped3"])
        assert exit_.value.code == 2 and "invalid choice: 'ped3'" in capsys.readouterr().err


def test_anomaly_examples_command(footage, tmp_path, capsys):
    rc = main(["anomalies", "--data", str(footage), "--out", str(tmp_path / "ex"), "--count", "2", "--preset", "tiny",
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    assert len(list((tmp_path / "ex").glob("*.png"))) == 2


@pytest.mark.slow
def test_learning_curve_with_eval_data_on_a_two_grid_model(labelled_test_set, tmp_path, capsys):
    """--eval-data records the learning curve on one grid whatever the model's scoring grids; the
    checkpoint is calibrated on its own grids (held-out tails: 8 frames of each 80-frame video)."""
    from tests.conftest import scene_frames

    footage = tmp_path / "long"
    for i in range(2):
        write_frame_folder(footage, f"v{i}", scene_frames(80, seed=i))
    out = tmp_path / "run"
    assert main(["train", "--data", str(footage), "--out", str(out), "--preset", "tiny", "--no-progress",
                 "--cache-dir", str(tmp_path / "cache"), "--eval-data", str(labelled_test_set), "--eval-every", "1",
                 "--set", "train.max_steps_per_epoch=2", "--set", "model.scoring.grid_shifts=2"]) == 0
    assert "the people the model trained on" in capsys.readouterr().out, "tail calibration says what it is worth"
    meta = json.loads((out / "model.json").read_text())
    assert meta["model"]["scoring"]["grid_shifts"] == 2 and meta["calibration"]["held_out"] is True
    assert len(meta["token_stats"]["discrepancy"]) == 2 * 4 * 6  # two grids of the tiny 4x6 grid
    history = meta["training"]["history"]
    assert history and all({"synthetic_auc_score", "test_micro_auc_paper", "test_micro_auc_configured"} <= set(h)
                           for h in history)
    assert all(0 <= h["test_micro_auc_configured"] <= 1 for h in history)


@pytest.mark.slow
def test_training_rebuilds_its_weights_bit_for_bit_learning_curve_or_not(labelled_test_set, tmp_path, capsys):
    """The README's promise: the same command rebuilds the same weights, with learning-curve points
    (--eval-data: the test set scored between epochs) or without them. The two files differ only by
    their random save id, which model-info's weights digest leaves out; another seed changes it."""
    from tests.conftest import scene_frames

    footage = tmp_path / "long"
    for i in range(2):
        write_frame_folder(footage, f"v{i}", scene_frames(80, seed=i))

    def run(name: str, *extra: str) -> tuple[bytes, str]:
        out = tmp_path / name
        assert main(["train", "--data", str(footage), "--out", str(out), "--preset", "tiny", "--no-progress",
                     "--cache-dir", str(tmp_path / "cache"), "--set", "train.max_steps_per_epoch=2", *extra]) == 0
        capsys.readouterr()
        assert main(["model-info", "--model", str(out), "--json"]) == 0
        return (out / "model.safetensors").read_bytes(), json.loads(capsys.readouterr().out)["weights_digest"]

    plain, curve, seed = run("a"), run("b", "--eval-data", str(labelled_test_set), "--eval-every", "1"), \
        run("c", "--set", "train.seed=1")
    assert plain[1] == curve[1] != seed[1]
    assert plain[0] != curve[0], "the files differ by their save id; the digest is what compares the weights"


def test_serve_refuses_wrong_settings_and_models_before_it_starts(tmp_path, monkeypatch, capsys):
    """`aedmae serve` with a setting out of range (flag, environment or config file) or a model path
    that holds no model ends in one line and exit code 2, before uvicorn starts (a traceback, or a
    server that never became ready, before)."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn started"))
    monkeypatch.delenv("AEDMAE_CONFIG", raising=False)  # --config sets it: gone again after the test
    assert main(["serve", "--port", "99999"]) == 2
    assert "invalid settings: port: Input should be less than or equal to 65535 (got 99999)" in capsys.readouterr().err
    config = tmp_path / "aedmae.toml"
    config.write_text("max_batch_delay_ms = -3\n")
    monkeypatch.setenv("AEDMAE_MAX_BATCH_SIZE", "0")
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_batch_size:" in err and "max_batch_delay_ms:" in err
    assert f"the config file {config}" in err
    monkeypatch.delenv("AEDMAE_MAX_BATCH_SIZE")
    os.environ.pop("AEDMAE_CONFIG")
    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert f"{tmp_path}: no .onnx model in this folder" in capsys.readouterr().err
    assert main(["serve", "--precision", "fp16"]) == 2  # the shipped fp32 graph in ONNX Runtime
    assert "precision=fp16 is the torch backend's autocast" in capsys.readouterr().err
    assert main(["serve", "--backend", "tensorrt"]) == 2
    assert "backend tensorrt runs a TensorRT engine; " in capsys.readouterr().err
    # a model folder this user may not read (a root-owned 0600 file, say): one line naming the file
    from model import checkpoint

    def unreadable(*paths):
        raise PermissionError(13, "Permission denied", str(paths[0]))

    monkeypatch.setattr(checkpoint, "sha256", unreadable)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "aedmae serve: error: [Errno 13] Permission denied:" in err


def test_an_output_or_cache_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = str(blocker / "out")
    data = str(tmp_path)
    for command in (["train", "--data", data, "--out", bad], ["evaluate", "--data", data, "--out", bad],
                    ["score", data, "--out", bad], ["calibrate", "--data", data, "--out", bad],
                    ["anomalies", "--data", str(tmp_path), "--out", str(tmp_path / "ok"), "--cache-dir", bad]):
        assert main(command) == 2, command
        assert not (tmp_path / "ok").exists()  # nothing made by a command that failed
        err = capsys.readouterr().err
        assert err == f"aedmae {command[0]}: error: {bad}: cannot be a folder: {blocker} is a file\n"


def test_a_video_that_cannot_be_read_leaves_no_output_folder(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert main(["score", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith(f"aedmae score: error: {bad}: cannot open video (corrupt file or unsupported codec)")
    assert not (tmp_path / "out").exists()


def test_evaluate_on_a_folder_that_is_no_test_set_leaves_no_output_folder(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert main(["evaluate", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("aedmae evaluate: error:")
    assert not (tmp_path / "out").exists()


def test_the_model_cards_weights_digest_is_the_shipped_models():
    """README's model card quotes the shipped weights' digest for anyone checking a rebuild: new
    weights without a new quote fail here."""
    from model.checkpoint import weights_digest
    from model.shipped import shipped_model

    readme = Path(__file__).resolve().parents[2] / "README.md"  # not the working directory's
    quoted = re.search(r"`([0-9a-f]{8})\.\.\.([0-9a-f]{4})` for these", readme.read_text())
    assert quoted, "README's model card no longer quotes the weights digest"
    digest = weights_digest(shipped_model())
    assert (digest[:8], digest[-4:]) == quoted.groups(), digest
