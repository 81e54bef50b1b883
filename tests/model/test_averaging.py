"""The weight average (train.ema_decay): its arithmetic, and what the trainer does with it."""

import dataclasses

import pytest
import torch

from model import checkpoint
from model.averaging import WeightAverage
from model.errors import ConfigError
from model.training import Trainer
from tests.conftest import tiny_train


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 1))
    net[2].requires_grad_(False)  # frozen: not averaged
    return net


def test_the_average_follows_by_hand_and_swaps_back_exactly():
    net = _net()
    average = WeightAverage(net, decay=0.25)
    assert "2.weight" not in average.live and "1.running_mean" in average.live
    assert "1.num_batches_tracked" not in average.live, "integer buffers are not averaged"
    w = net[0].weight
    expected = w.detach().clone()
    for step in range(1, 4):
        with torch.no_grad():
            w.add_(1.0)
        average.update()
        decay = min(0.25, (1 + step) / (10 + step))  # 2/11 (warm-up), then the cap: 3/12 = 0.25, 4/13 > 0.25
        expected = decay * expected + (1 - decay) * w.detach()
    torch.testing.assert_close(average.average["0.weight"], expected, rtol=0, atol=1e-6)

    trained = {k: v.clone() for k, v in net.state_dict().items()}
    with average.applied():
        torch.testing.assert_close(net[0].weight.detach(), expected, rtol=0, atol=1e-6)
    assert all(torch.equal(trained[k], v) for k, v in net.state_dict().items()), "applied() puts them back"

    state = average.state_dict()
    snapshot = state["average"]["0.weight"].clone()
    average.update()  # a snapshot: what was saved does not move on with the average
    assert not torch.equal(average.average["0.weight"], snapshot)
    assert torch.equal(state["average"]["0.weight"], snapshot)
    average.load_state_dict(state)  # and back to it
    again = WeightAverage(net, decay=0.25)
    again.load_state_dict(state)
    assert again.updates == 3 and torch.equal(again.average["0.weight"], average.average["0.weight"])
    average.copy_to_net()
    assert torch.equal(net[0].weight.detach(), again.average["0.weight"])
    assert torch.equal(net[2].weight.detach(), trained["2.weight"]), "frozen weights are left alone"

    net[2].requires_grad_(True)
    with pytest.raises(ValueError, match="other weights"):
        WeightAverage(net, decay=0.5).load_state_dict(state)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        WeightAverage(net, decay=1.0)


def test_training_with_an_average_keeps_the_trajectory_and_ends_each_stage_on_the_average(footage, tmp_path, tiny):
    """The teacher stage's losses are the plain run's (the average only reads the weights); the
    checkpoint's encoder and teacher are the average of the weights after each teacher step, computed
    here by hand; the epoch hook sees the averaged weights."""
    model_cfg, plain_cfg = tiny_train(tiny, epochs_teacher=2, epochs_student=1, max_steps_per_epoch=3, precision="fp32")
    ema_cfg = dataclasses.replace(plain_cfg, ema_decay=0.6)
    plain = Trainer([str(footage)], tmp_path / "plain", model_cfg, plain_cfg, cache_dir=tmp_path / "c",
                    progress=False).run()

    trainer = Trainer([str(footage)], tmp_path / "ema", model_cfg, ema_cfg, cache_dir=tmp_path / "c",
                      progress=False)
    by_hand: dict[str, torch.Tensor] = {}
    steps = 0
    hook_saw: dict[str, torch.Tensor] = {}
    real_step = trainer.train_step

    def step(net, batch, gen, opt, teacher_stage, where=""):
        nonlocal steps
        trained = {n: p for n, p in net.named_parameters() if p.requires_grad}
        if teacher_stage and steps == 0:  # the average starts from the weights before any step
            by_hand.update({n: p.detach().clone() for n, p in trained.items()})
        loss = real_step(net, batch, gen, opt, teacher_stage, where)
        if teacher_stage:
            steps += 1
            decay = min(0.6, (1 + steps) / (10 + steps))
            for name, p in trained.items():
                by_hand[name] = decay * by_hand[name] + (1 - decay) * p.detach()
        return loss

    def hook(stage, epoch, net, held):
        if stage == "teacher" and epoch == 2:
            hook_saw.update({k: v.detach().clone() for k, v in net.named_parameters()})

    trainer.train_step, trainer.epoch_hook = step, hook
    summary = trainer.run()

    assert summary["stages"]["teacher"]["losses"] == plain["stages"]["teacher"]["losses"]
    assert summary["stages"]["student"]["losses"] != plain["stages"]["student"]["losses"]
    saved = checkpoint.load(tmp_path / "ema")[0].state_dict()
    assert steps == 6 and by_hand
    for name, expected in by_hand.items():
        torch.testing.assert_close(saved[name], expected, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(hook_saw[name], expected, rtol=1e-5, atol=1e-6, msg=name)
    plain_saved = checkpoint.load(tmp_path / "plain")[0].state_dict()
    assert any(not torch.equal(plain_saved[k], saved[k]) for k in by_hand), "the average is not the last step"


def test_an_interrupted_run_with_an_average_resumes_to_the_same_weights(footage, tmp_path, tiny):
    model_cfg, cfg = tiny_train(tiny, epochs_teacher=2, epochs_student=2, max_steps_per_epoch=2, precision="fp32",
                                ema_decay=0.7)
    Trainer([str(footage)], tmp_path / "whole", model_cfg, cfg, cache_dir=tmp_path / "c", progress=False).run()

    def interrupt(stage, epoch, net, held):
        if (stage, epoch) == ("student", 1):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer([str(footage)], tmp_path / "cut", model_cfg, cfg, cache_dir=tmp_path / "c", epoch_hook=interrupt,
                progress=False).run()
    state = torch.load(tmp_path / "cut" / "train_state.pt", weights_only=False)
    assert (state["stage"], state["average"]["updates"]) == ("teacher", 4)
    Trainer([str(footage)], tmp_path / "cut", model_cfg, cfg, cache_dir=tmp_path / "c",
            progress=False).run(resume=True)
    whole, cut = (checkpoint.load(tmp_path / d)[0].state_dict() for d in ("whole", "cut"))
    assert all(torch.equal(whole[k], cut[k]) for k in whole)

    with pytest.raises(ConfigError, match=r"train\.ema_decay must be in \[0, 1\)"):
        Trainer([str(footage)], tmp_path / "x", model_cfg, dataclasses.replace(cfg, ema_decay=1.0),
                cache_dir=tmp_path / "c", progress=False)
