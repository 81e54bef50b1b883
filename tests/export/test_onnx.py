import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from export.bundle import OUTPUT_NAMES, compare_outputs, load_bundle
from export.onnx_export import DeployedGraph, ExportError, export_onnx, run_onnxruntime
from model import checkpoint
from model.errors import CheckpointError
from model.evaluation import scorer_from_meta
from tests.conftest import assert_durable, frames_batch, record_disk_ops


def test_parity_with_pytorch_and_sidecar(tiny_checkpoint, tiny_onnx):
    bundle = load_bundle(tiny_onnx)
    side = bundle.sidecar
    assert side["parity_vs_pytorch"]["ok"] and side["parity_vs_pytorch"]["score_max_rel_err"] < 1e-4
    assert side["opset"] >= 17 and side["io"]["input"] == "frames" and side["io"]["outputs"] == list(OUTPUT_NAMES)
    assert side["calibration"]["threshold"] > 0 and side["model"]["image_size"] == [32, 48]
    # fresh frames, not the golden clip: ONNX Runtime == PyTorch
    net, meta = checkpoint.load(tiny_checkpoint)
    graph = DeployedGraph(net, scorer_from_meta(net, meta)).eval()
    frames = frames_batch(5, net.cfg)
    with torch.no_grad():
        ref = dict(zip(OUTPUT_NAMES, (t.numpy() for t in graph(torch.from_numpy(frames))), strict=True))
    got = run_onnxruntime(tiny_onnx, frames)
    assert compare_outputs(got, ref, "fp32")["ok"]
    assert np.all((got["calibrated"] >= 0) & (got["calibrated"] <= 1))
    assert got["heatmap"].shape == (5, *net.cfg.grid)


def test_dynamic_batch_sizes_give_identical_results(tiny_checkpoint, tiny_onnx):
    net, _ = checkpoint.load(tiny_checkpoint)
    frames = frames_batch(8, net.cfg, seed=3)
    whole = run_onnxruntime(tiny_onnx, frames, batch=8)
    for b in (1, 3):
        other = run_onnxruntime(tiny_onnx, frames, batch=b)
        for k in OUTPUT_NAMES:
            np.testing.assert_allclose(other[k], whole[k], rtol=1e-5, atol=1e-7)


def test_metadata_round_trip(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    props = {p.key: p.value for p in model.metadata_props}
    embedded = json.loads(props["aedmae.sidecar"])
    side = load_bundle(tiny_onnx).sidecar
    assert embedded["calibration"] == side["calibration"] and embedded["model"] == side["model"]
    assert props["aedmae.version"] == side["code_version"]
    assert [i.name for i in model.graph.input] == ["frames"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)


def test_fp16_within_tolerance(tiny_checkpoint, tmp_path):
    side = export_onnx(tiny_checkpoint, tmp_path / "m16.onnx", precision="fp16")
    assert side["precision"] == "fp16" and side["parity_vs_pytorch"]["ok"]
    model = onnx.load(str(tmp_path / "m16.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)


def test_corrupt_and_mismatched_files(tiny_onnx, tmp_path):
    copy = tmp_path / "model.onnx"
    copy.write_bytes(tiny_onnx.read_bytes())
    with pytest.raises(CheckpointError, match=r"sidecar model\.onnx\.json is missing"):
        load_bundle(copy)
    for text, found in (("[]", "'a JSON list'"), ('{"format": "x"}', "'x'"), ("{", None)):
        (tmp_path / "model.onnx.json").write_text(text)  # a hand-edited sidecar: a clear error, no AttributeError
        with pytest.raises(CheckpointError, match=rf"unknown format {found}" if found else "unreadable sidecar"):
            load_bundle(copy)
    (tmp_path / "model.onnx.json").write_text((tiny_onnx.parent / "model.onnx.json").read_text())
    assert load_bundle(tmp_path).graph == copy
    data = bytearray(copy.read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        load_bundle(copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no \.onnx model"):
        load_bundle(tmp_path / "empty")
    # the checkpoint's weights named instead of its graph: pointed to the graph beside them
    with pytest.raises(CheckpointError, match=r"neither an ONNX graph nor a TensorRT engine.*: .*model\.onnx$"):
        load_bundle(tiny_onnx.parent / "model.safetensors")
    with pytest.raises(ExportError, match="fp32, fp16 or int8"):
        export_onnx(tiny_onnx.parent, tmp_path / "x.onnx", precision="int4")


def test_two_grid_scoring_recalibrated_on_held_out_tails_exports_with_parity(tiny_checkpoint, tmp_path, capsys):
    """`aedmae calibrate --held-out-of` refits per-view statistics for model.scoring.grid_shifts=2 with
    time_reversal (4 views), pooled (token_stat_pool), on the training footage's held-out tails; the ONNX
    graph then averages the views as PyTorch does."""
    from service.cli import main
    from tests.conftest import scene_frames, write_frame_folder

    footage = tmp_path / "train"
    for i in range(2):
        write_frame_folder(footage, f"v{i}", scene_frames(80, 32, 48, seed=i))  # 8-frame tails held out
    recal, cache = tmp_path / "two", str(tmp_path / "cache")
    assert main(["calibrate", "--model", str(tiny_checkpoint), "--held-out-of", str(footage), "--out", str(recal),
                 "--cache-dir", cache, "--no-progress", "--set", "model.scoring.grid_shifts=2",
                 "--set", "model.scoring.contrast=ratio",  # the median contrast exports too
                 "--set", "model.scoring.time_reversal=true",
                 "--set", "model.scoring.token_stat_pool=1"]) == 0  # pooled statistics export as stored
    printed = capsys.readouterr().out
    assert "cross-validated over videos" in printed and "the people the model trained on" in printed
    meta = json.loads((recal / "model.json").read_text())
    assert meta["model"]["scoring"]["grid_shifts"] == 2 and meta["calibration"]["held_out"] is True
    assert meta["model"]["scoring"]["contrast"] == "ratio" and meta["model"]["scoring"]["time_reversal"] is True
    assert meta["model"]["scoring"]["token_stat_pool"] == 1
    assert meta["calibration"]["source"] == ["v0[72:80]", "v1[72:80]"]
    net, _ = checkpoint.load(recal)
    assert len(meta["token_stats"]["teacher_error"]) == 4 * net.cfg.grid[0] * net.cfg.grid[1]
    sidecar = export_onnx(recal, recal / "model.onnx")
    assert sidecar["parity_vs_pytorch"]["ok"]
    assert load_bundle(recal).grid_shifts == 2 and load_bundle(tiny_checkpoint).grid_shifts == 1  # what serve reads
    frames = frames_batch(3, net.cfg, seed=4)
    got = run_onnxruntime(recal / "model.onnx", frames)
    assert not np.allclose(got["score"], run_onnxruntime(tiny_checkpoint / "model.onnx", frames)["score"])
    with torch.no_grad():
        ref = DeployedGraph(net, scorer_from_meta(net, meta)).eval()(torch.from_numpy(frames))
    np.testing.assert_allclose(got["score"], ref[0].numpy(), rtol=1e-4)
    # without held-out tails: a clear error, nothing written
    short = tmp_path / "short"
    write_frame_folder(short, "v0", scene_frames(20, 32, 48))
    assert main(["calibrate", "--model", str(tiny_checkpoint), "--held-out-of", str(short), "--out",
                 str(tmp_path / "none"), "--cache-dir", cache]) == 2
    assert not (tmp_path / "none").exists()


def test_a_graph_left_beside_a_newer_checkpoint_is_refused(tiny_checkpoint, footage, tmp_path, capsys):
    """Recalibrating (or retraining) into a folder that holds an exported graph makes that graph stale:
    serving it would use the old calibration. The sidecar records the digest of the checkpoint it was
    exported from, and loading refuses a mismatch, naming the command that fixes it."""
    from service.cli import main

    folder = tmp_path / "camera"
    shutil.copytree(tiny_checkpoint, folder)
    assert load_bundle(folder).sidecar["source_checkpoint_sha256"] == checkpoint.digest(folder)
    assert main(["calibrate", "--model", str(folder), "--data", str(footage), "--out", str(folder),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    assert f"to serve it: aedmae export onnx --model {folder}" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="exported from another version of the checkpoint beside it"):
        load_bundle(folder)
    # a sidecar from before the digest was recorded (the shipped one): caught by the calibration it carries
    side = folder / "model.onnx.json"
    legacy = json.loads(side.read_text())
    del legacy["source_checkpoint_sha256"]
    side.write_text(json.dumps(legacy))
    assert legacy["calibration"]["threshold"] != checkpoint.read_meta(folder)["calibration"]["threshold"]
    with pytest.raises(CheckpointError, match="exported from another version of the checkpoint beside it"):
        load_bundle(folder)
    export_onnx(folder, folder / "model.onnx")
    recalibrated = checkpoint.read_meta(folder)["calibration"]["threshold"]
    assert load_bundle(folder).sidecar["calibration"]["threshold"] == recalibrated
    for graph in folder.glob("model.onnx*"):
        graph.unlink()
    with pytest.raises(CheckpointError, match=r"without its ONNX graph; export it first: aedmae export onnx"):
        load_bundle(folder)


def test_a_failed_export_keeps_the_previous_one_and_an_unwritable_target_is_a_clear_error(
        tiny_checkpoint, tmp_path, monkeypatch):
    """The graph is written and checked in a folder beside the target, then moved in (the same file
    system: no cross-device rename from /tmp); a failed check used to delete the export it was replacing."""
    import export.onnx_export as onnx_export

    out = tmp_path / "serving" / "model.onnx"
    export_onnx(tiny_checkpoint, out)
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert sorted(before) == ["model.onnx", "model.onnx.json"]
    monkeypatch.setattr(onnx_export, "compare_outputs", lambda got, ref, precision: {"ok": False})
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_onnx(tiny_checkpoint, out)
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before  # nothing lost, nothing left over
    load_bundle(out)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ExportError, match=r"a-file/model\.onnx: cannot write there"):
        export_onnx(tiny_checkpoint, blocker / "model.onnx")


def test_write_beside_moves_a_checked_export_in_and_leaves_the_old_one_after_a_failure(tmp_path, monkeypatch):
    """The one way both exports (ONNX, and the TensorRT engine with its parity check, which needs a GPU
    to run) replace a model file: drafted and checked in a folder beside it, moved in only on success."""
    from export.bundle import ExportError, sidecar_path, write_beside

    out = tmp_path / "m" / "model.engine"

    def draft(content: str, fail: bool = False):
        def write(path):
            assert path.parent.parent == out.parent and path.name == out.name  # beside the target
            path.write_text(content)
            sidecar_path(path).write_text(content + " sidecar")
            if fail:
                raise ExportError("parity failed")
            return content
        return write

    assert write_beside(out, draft("v1")) == "v1"
    assert out.read_text() == "v1" and sidecar_path(out).read_text() == "v1 sidecar"
    with pytest.raises(ExportError, match="parity failed"):
        write_beside(out, draft("v2", fail=True))
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.engine", "model.engine.json"]
    assert out.read_text() == "v1" and sidecar_path(out).read_text() == "v1 sidecar"
    ops = record_disk_ops(monkeypatch)
    assert write_beside(out, draft("v3")) == "v3" and out.read_text() == "v3"
    assert_durable(ops, out)
    assert_durable(ops, sidecar_path(out))
