import dataclasses
import json
import logging
import os
import re

import pytest
import torch

from model import checkpoint
from model.config import apply_overrides
from model.cpu import native_cpu_bf16
from model.errors import CheckpointError, ConfigError
from model.network import AEDMAE
from model.scoring import score_frames
from model.training import Trainer
from tests.conftest import assert_durable, record_disk_ops, tiny_train


def _frames(cfg, n=3):
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, 256, (n, 3, *cfg.image_size, cfg.channels), generator=g, dtype=torch.uint8)


@pytest.mark.slow
def test_short_run_lowers_both_losses_and_round_trips(footage, tmp_path, tiny):
    model_cfg, train_cfg = tiny_train(tiny, epochs_teacher=4, epochs_student=3, batch_size=4)
    trainer = Trainer([str(footage)], tmp_path / "run", model_cfg, train_cfg, cache_dir=tmp_path / "cache",
                      progress=False)
    summary = trainer.run()
    teacher, student = summary["stages"]["teacher"]["losses"], summary["stages"]["student"]["losses"]
    assert len(teacher) == 4 and len(student) == 3
    assert teacher[-1] < teacher[0] * 0.9
    assert student[-1] < student[0] * 0.9
    assert summary["stages"]["teacher"]["frames_per_second"] > 0

    net, meta = checkpoint.load(tmp_path / "run")
    assert meta["data"]["videos"] == 2 and meta["train"]["epochs_teacher"] == 4
    assert meta["model"]["image_size"] == list(model_cfg.image_size)
    # weights (and BatchNorm statistics) survive the round trip: same scores as a second load
    again, _ = checkpoint.load(tmp_path / "run" / "model.safetensors")
    frames = _frames(model_cfg)
    with torch.no_grad():
        assert torch.equal(score_frames(net, frames).score, score_frames(again, frames).score)
    bn = dict(net.named_buffers())["blocks.0.attn.conv_q.bn.running_mean"]
    assert bn.abs().sum() > 0, "BatchNorm running statistics are saved"


def test_a_run_publishes_its_state_and_checkpoint_durably(footage, tmp_path, tiny, monkeypatch):
    """A power cut after a rename must not leave an empty file where the state or the weights were."""
    ops = record_disk_ops(monkeypatch)
    model_cfg, train_cfg = tiny_train(tiny, epochs_teacher=1, epochs_student=1, max_steps_per_epoch=2)
    Trainer([str(footage)], tmp_path / "run", model_cfg, train_cfg, cache_dir=tmp_path / "cache",
            progress=False).run()
    for name in ("train_state.pt", "model.safetensors", "model.json"):
        assert_durable(ops, tmp_path / "run" / name)
    # readable by whoever may read the metadata (the umask's choice), not by the owner only
    modes = {name: (tmp_path / "run" / name).stat().st_mode & 0o777 for name in ("model.safetensors", "model.json")}
    assert modes["model.safetensors"] == modes["model.json"], modes


def test_student_stage_freezes_backbone(footage, tmp_path, tiny):
    model_cfg, train_cfg = tiny_train(tiny, epochs_teacher=1, epochs_student=1, max_steps_per_epoch=3)
    trainer = Trainer([str(footage)], tmp_path / "run", model_cfg, train_cfg, cache_dir=tmp_path / "cache",
                      progress=False)
    snapshots = {}

    def hook(stage, epoch, net, held):
        snapshots[stage] = {k: v.clone() for k, v in net.state_dict().items()}
        assert len(held) == 0  # 24-frame videos are too short for a held-out tail
        return {"hook": 1.0}

    trainer.epoch_hook = hook
    summary = trainer.run()
    before, after = snapshots["teacher"], snapshots["student"]
    frozen = [k for k in before if not k.startswith("student_")]
    assert all(torch.equal(before[k], after[k]) for k in frozen), "encoder/teacher (incl. BN stats) must not change"
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("student_"))
    assert summary["history"][0]["hook"] == 1.0


@pytest.mark.parametrize("student_synthetic", [True, False])
def test_student_stage_sees_pasted_anomalies_only_when_asked(footage, tmp_path, tiny, student_synthetic):
    model_cfg, train_cfg = tiny_train(tiny, epochs_teacher=1, epochs_student=1, max_steps_per_epoch=4,
                                      student_synthetic=student_synthetic)
    train_cfg = dataclasses.replace(train_cfg, synthetic=dataclasses.replace(train_cfg.synthetic, fraction=1.0))
    trainer = Trainer([str(footage)], tmp_path / "run", model_cfg, train_cfg, cache_dir=tmp_path / "cache",
                      progress=False)
    pasted = {"teacher": 0.0, "student": 0.0}
    steps = {"teacher": trainer._step_teacher, "student": trainer._step_student}

    def counting(stage):
        def step(net, batch, gen):
            pasted[stage] += float(batch["mask"].sum())
            return steps[stage](net, batch, gen)
        return step

    trainer._step_teacher, trainer._step_student = counting("teacher"), counting("student")
    trainer.run()
    assert pasted["teacher"] > 0
    assert (pasted["student"] > 0) == student_synthetic


def test_resume_after_interruption_and_refuse_other_config(footage, tmp_path, tiny, caplog):
    caplog.set_level(logging.INFO, logger="model.training")
    model_cfg, train_cfg = tiny_train(tiny, epochs_teacher=2, epochs_student=2, max_steps_per_epoch=2, precision="fp32")
    out = tmp_path / "run"

    def interrupt(stage, epoch, net, held):
        if stage == "student":
            raise KeyboardInterrupt

    first = Trainer([str(footage)], out, model_cfg, train_cfg, cache_dir=tmp_path / "c", epoch_hook=interrupt,
                    progress=False)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert (state["stage"], state["epoch"]) == ("teacher", 1)
    assert not (out / "model.safetensors").exists()

    other = dataclasses.replace(train_cfg, epochs_student=3)
    with pytest.raises(CheckpointError, match=r"train\.epochs_student \(saved 2, now 3\)"):
        Trainer([str(footage)], out, model_cfg, other, cache_dir=tmp_path / "c", progress=False).run(resume=True)

    # A state written before train.precision existed was trained in fp32: it resumes in fp32 only.
    del state["train_config"]["precision"]
    del state["train_config"]["synthetic"]["native_size"]  # newer fields take their defaults
    torch.save(state, out / "train_state.pt")
    in_bf16 = dataclasses.replace(train_cfg, precision="bf16")
    with pytest.raises(CheckpointError, match=r"train\.precision \(saved 'fp32', now 'bf16'\)"):
        Trainer([str(footage)], out, model_cfg, in_bf16, cache_dir=tmp_path / "c", progress=False).run(resume=True)

    summary = Trainer([str(footage)], out, model_cfg, train_cfg, cache_dir=tmp_path / "c",
                      progress=False).run(resume=True)
    assert summary["stages"]["teacher"]["steps"] == 4, "the teacher stage is not run again"
    assert summary["stages"]["student"]["epochs"] == 2
    assert [h["stage"] for h in summary["history"]] == ["teacher", "teacher", "student", "student"]
    epochs = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert re.search(r"^teacher epoch 1/2: .* min of training so far, about \d+\.\d min left in this stage$",
                     epochs[0]), epochs
    assert epochs[-1].startswith("student epoch 2/2") and epochs[-1].endswith("about 0.0 min left in this stage")


def test_bad_synthetic_settings_fail_before_any_frame_is_read(tmp_path, tiny):
    model_cfg, train_cfg = tiny
    bad = dataclasses.replace(train_cfg, synthetic=dataclasses.replace(train_cfg.synthetic, fraction=-0.1))
    with pytest.raises(ConfigError, match=r"train\.synthetic\.fraction must be in \[0, 1\], got -0\.1"):
        Trainer([str(tmp_path / "no-such-footage")], tmp_path / "out", model_cfg, bad, cache_dir=tmp_path / "c",
                progress=False)


def test_student_distilled_from_a_taken_teacher_equals_the_full_run(footage, tmp_path, tiny):
    model_cfg, train_cfg = tiny_train(tiny, epochs_teacher=1, epochs_student=2, max_steps_per_epoch=3)
    full = Trainer([str(footage)], tmp_path / "full", model_cfg, train_cfg, cache_dir=tmp_path / "c", progress=False)
    full_summary = full.run()
    again = Trainer([str(footage)], tmp_path / "again", model_cfg, train_cfg, cache_dir=tmp_path / "c",
                    progress=False)
    summary = again.run(teacher=tmp_path / "full")
    carried = ("epochs", "steps", "frames", "seconds", "losses")
    assert all(summary["stages"]["teacher"][k] == full_summary["stages"]["teacher"][k] for k in carried)
    a, b = checkpoint.load(tmp_path / "full")[0].state_dict(), checkpoint.load(tmp_path / "again")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "same teacher + seed + config -> the same student"

    other = dataclasses.replace(model_cfg, decoder_dim=model_cfg.decoder_dim * 2)
    with pytest.raises(ConfigError, match=r"differs in model\.decoder_dim \(saved 16, now 32\)"):
        Trainer([str(footage)], tmp_path / "x", other, train_cfg, cache_dir=tmp_path / "c",
                progress=False).run(teacher=tmp_path / "full")
    # the window's gap is the one scoring setting the teacher learnt: a teacher of another gap is refused
    gap4 = dataclasses.replace(model_cfg, scoring=dataclasses.replace(model_cfg.scoring, context_gap=4))
    with pytest.raises(ConfigError, match=r"reads frames 3 apart \(model.scoring.context_gap\), this run 4"):
        Trainer([str(footage)], tmp_path / "y", gap4, train_cfg, cache_dir=tmp_path / "c",
                progress=False).run(teacher=tmp_path / "full")


def test_training_reads_the_window_the_model_is_scored_on(footage, tmp_path, tiny):
    model_cfg, train_cfg = tiny_train(tiny, epochs_teacher=1, epochs_student=1, max_steps_per_epoch=1)
    model_cfg = dataclasses.replace(model_cfg, scoring=dataclasses.replace(model_cfg.scoring, context_gap=4))
    trainer = Trainer([str(footage)], tmp_path / "run", model_cfg, train_cfg, cache_dir=tmp_path / "c", progress=False)
    video = trainer.train_segments[0].frames
    t = 10
    i = trainer.dataset.index.index((0, t))
    trainer.dataset.fraction = 0.0  # the clean frames, to compare with the video's
    trainer.dataset.max_shift = 0
    sample = trainer.dataset[i]["frames"].numpy()
    assert all((sample[k] == video[t + o]).all() for k, o in enumerate((-4, 0, 4)))
    trainer.run()
    assert checkpoint.load(tmp_path / "run")[0].cfg.scoring.context_gap == 4


def test_corrupt_and_mismatched_checkpoints(tmp_path, tiny):
    net = AEDMAE(tiny[0])
    folder = checkpoint.save(net, tmp_path / "ok")
    meta = json.loads((folder / "model.json").read_text())
    meta["model"]["embed_dim"] = 64
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match"):
        checkpoint.load(folder)
    (folder / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="corrupt weights"):
        checkpoint.load(folder)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        checkpoint.load(tmp_path)
    with pytest.raises(CheckpointError, match="no such file or folder"):  # not "not a checkpoint ... in /"
        checkpoint.load(tmp_path / "typo")


@pytest.mark.parametrize(("field", "value", "match"), [
    (None, None, "metadata must be a JSON object, not list"),
    ("model", [], r"ModelConfig: expected an object of fields, got list"),
    ("embed_dim", "64", r"ModelConfig\.embed_dim: expected int, got '64'"),
    ("depth", True, r"ModelConfig\.depth: expected int, got True"),
    ("scoring", 3, "ScoringConfig: expected an object of fields"),
    ("mask_ratio", "half", r"mask_ratio: expected float"),
])
def test_hand_edited_metadata_of_the_wrong_shape_is_a_checkpoint_error(tmp_path, tiny, field, value, match):
    """Not an AttributeError, or a TypeError from deep inside validation."""
    folder = checkpoint.save(AEDMAE(tiny[0]), tmp_path / "ok")
    meta = json.loads((folder / "model.json").read_text())
    assert checkpoint.load(folder)[0].cfg.mlp_ratio == 2.0 and isinstance(meta["model"]["mlp_ratio"], float)
    (folder / "model.json").write_text(json.dumps({**meta, "model": {**meta["model"], "mlp_ratio": 2}}))
    assert checkpoint.load(folder)[0].cfg.mlp_ratio == 2  # a whole number where a float goes is one
    if field is None:
        edited = [meta]
    elif field == "model":
        edited = {**meta, "model": value}
    else:
        edited = {**meta, "model": {**meta["model"], field: value}}
    (folder / "model.json").write_text(json.dumps(edited))
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(folder)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("calibration", "x", "calibration must be an object with the numbers threshold, slope"),
    ("calibration", {"threshold": "16", "slope": 0.2, "median": 5, "quantile": 0.99, "normal_frames": 9},
     "calibration must be an object"),
    ("token_stats", 3, "token_stats must hold lists of numbers"),
    ("token_stats", {"teacher_error": [1.0, "a"], "discrepancy": [1.0, 1.0]}, "token_stats must hold lists"),
])
def test_hand_edited_scoring_metadata_is_a_clear_error(tiny_checkpoint, tmp_path, field, value, match):
    """The calibration and token statistics a scorer is built from: an AttributeError or TypeError before."""
    import shutil

    from model.errors import ConfigError
    from model.evaluation import scorer_from_meta

    folder = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, folder)
    meta = json.loads((folder / "model.json").read_text())
    assert scorer_from_meta(*checkpoint.load(folder)).calibration is not None
    (folder / "model.json").write_text(json.dumps({**meta, field: value}))
    with pytest.raises(ConfigError, match=match):
        scorer_from_meta(*checkpoint.load(folder))


def test_weights_and_metadata_of_different_saves_are_refused(tmp_path, tiny, monkeypatch):
    """A save interrupted between its two renames leaves the new weights beside the old metadata
    (another config, other token statistics): reading it must fail, not score silently wrong."""
    first = checkpoint.save(AEDMAE(tiny[0]), tmp_path / "run")
    old_meta = (first / "model.json").read_text()
    real_replace, calls = os.replace, []

    def crash_on_metadata(src, target):
        calls.append(target)
        if str(target).endswith("model.json"):
            raise KeyboardInterrupt("killed between the renames")
        return real_replace(src, target)

    monkeypatch.setattr(os, "replace", crash_on_metadata)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(AEDMAE(tiny[0]), tmp_path / "run")
    monkeypatch.undo()
    assert len(calls) == 2 and (first / "model.json").read_text() == old_meta
    with pytest.raises(CheckpointError, match="different saves"):
        checkpoint.read_meta(first)
    with pytest.raises(CheckpointError, match="different saves"):
        checkpoint.load(first)
    # one file copied over from another checkpoint
    other = checkpoint.save(AEDMAE(tiny[0]), tmp_path / "other")
    (other / "model.json").write_text(old_meta)
    with pytest.raises(CheckpointError, match="different saves"):
        checkpoint.load(other)
    # a save that completes is read back, and so is a checkpoint from before save ids (neither has one)
    checkpoint.save(AEDMAE(tiny[0]), tmp_path / "run")
    assert checkpoint.load(first)[1]["save_id"]
    from safetensors.torch import load_file, save_file

    weights = first / "model.safetensors"
    save_file(load_file(weights), weights, metadata={"format": checkpoint.FORMAT})
    meta = json.loads((first / "model.json").read_text())
    del meta["save_id"]
    (first / "model.json").write_text(json.dumps(meta))
    checkpoint.load(first)


def test_overrides(tiny):
    from model.errors import ConfigError

    m, t = apply_overrides(*tiny, ["model.patch_size=4", "train.synthetic.fraction=0.5",
                                   "train.betas=0.8,0.9", "train.motion_weighting=false",
                                   "model.image_size=32x48"])
    assert m.patch_size == 4 and t.synthetic.fraction == 0.5 and t.betas == (0.8, 0.9)
    assert t.motion_weighting is False and m.image_size == (32, 48)
    with pytest.raises(ConfigError, match="no field 'nope'"):
        apply_overrides(*tiny, ["model.nope=1"])
    with pytest.raises(ConfigError, match="cannot read"):
        apply_overrides(*tiny, ["train.batch_size=many"])
    with pytest.raises(ConfigError, match="multiple of"):
        apply_overrides(*tiny, ["model.patch_size=5"])


def test_holdout_videos_are_held_out_whole_and_checked(footage, tmp_path, tiny):
    from model.dataset import load_segments
    from model.frames import FrameCache

    model_cfg, train_cfg = apply_overrides(*tiny, ["train.holdout_videos=02"])
    assert train_cfg.holdout_videos == ("02",)
    cache = FrameCache(tmp_path / "cache")
    train, held, summary = load_segments([str(footage)], model_cfg, train_cfg, cache)
    assert [(s.video, len(s.frames)) for s in train] == [("01", 24)], "24 frames: too short to hold a tail out"
    assert [(s.video, s.start, len(s.frames)) for s in held] == [("02", 0, 24)], "02 held out whole"
    assert summary["holdout_videos"] == ["02"]
    assert (summary["train_frames"], summary["holdout_frames"]) == (24, 24)
    model_cfg, train_cfg = apply_overrides(*tiny, ["train.holdout_fraction=0.5"])
    train, held, summary = load_segments([str(footage)], model_cfg, train_cfg, cache)
    assert [s.name for s in train] == ["01[0:12]", "02[0:12]"] and [s.name for s in held] == ["01[12:24]", "02[12:24]"]
    assert (summary["train_frames"], summary["holdout_frames"]) == (24, 24)
    with pytest.raises(ConfigError, match="no video named 03"):
        load_segments([str(footage)], *apply_overrides(*tiny, ["train.holdout_videos=01,03"]), cache)
    with pytest.raises(ConfigError, match="nothing is left to train on"):
        load_segments([str(footage)], *apply_overrides(*tiny, ["train.holdout_videos=01,02"]), cache)


@pytest.mark.parametrize("precision, dtype", [
    ("fp32", torch.float32), ("bf16", torch.bfloat16),
    ("auto", torch.bfloat16 if native_cpu_bf16() else torch.float32)])
def test_cpu_training_precision(footage, tmp_path, tiny, precision, dtype):
    """fp32 trains in float32; bf16 runs the layers under bf16 autocast, both stages still learn, and
    the checkpoint stays float32; auto is bf16 only where the CPU has native bf16."""
    model_cfg, train_cfg = tiny_train(tiny, epochs_teacher=3, epochs_student=2, batch_size=4, device="cpu",
                                      precision=precision)
    seen: set[torch.dtype] = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear) and module.training and torch.is_grad_enabled():
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        summary = Trainer([str(footage)], tmp_path / "run", model_cfg, train_cfg, cache_dir=tmp_path / "cache",
                          progress=False).run()
    finally:
        handle.remove()
    assert seen == {dtype}, seen
    teacher, student = summary["stages"]["teacher"]["losses"], summary["stages"]["student"]["losses"]
    assert teacher[-1] < teacher[0] and student[-1] < student[0], (teacher, student)
    net, meta = checkpoint.load(tmp_path / "run")
    assert meta["train"]["precision"] == precision
    assert meta["training"]["precision"] == ("bf16" if dtype == torch.bfloat16 else "fp32")
    assert {p.dtype for p in net.parameters()} == {torch.float32}


def test_unknown_training_precision_is_refused(footage, tmp_path, tiny):
    with pytest.raises(ConfigError, match=r"train\.precision='fp8'"):
        Trainer([str(footage)], tmp_path / "run", *tiny_train(tiny, precision="fp8"), cache_dir=tmp_path / "cache",
                progress=False)
