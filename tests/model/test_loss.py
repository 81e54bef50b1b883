import pytest
import torch

from model.loss import distillation_loss, motion_weights, teacher_loss


def test_motion_weights_hand_computed():
    # one frame, 1 channel, 4x4 pixels, patch 2 -> 4 tokens
    grad = torch.zeros(1, 1, 4, 4)
    grad[0, 0, 0, 0] = 10.0  # token 0: max 10 (the patch's max, not its mean: the pixel below does not count)
    grad[0, 0, 1, 1] = 5.0
    grad[0, 0, 1, 3] = 30.0  # token 1: max 30
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 3, 3] = 1.0  # token 3: anomaly, boosted by max(128, 30) = 128
    w = motion_weights(grad, mask, 2)
    expected = torch.tensor([[10.0, 30.0, 0.0, 128.0]]) / 168.0
    assert torch.allclose(w, expected)


def test_motion_weights_channel_mean_and_large_gradients():
    grad = torch.zeros(1, 3, 2, 4)
    grad[0, 0, 0, 0] = 200.0  # token 0, channel 0
    grad[0, 1, 1, 1] = 100.0  # token 0, channel 1
    mask = torch.zeros(1, 1, 2, 4)
    mask[0, 0, 0, 3] = 1.0  # token 1 boosted by max(128, 200) = 200 in every channel
    w = motion_weights(grad, mask, 2)
    assert torch.allclose(w, torch.tensor([[100.0, 200.0]]) / 300.0)


def test_motion_weights_static_frame_is_uniform():
    w = motion_weights(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4), 2)
    assert torch.allclose(w, torch.full((2, 4), 0.25))


def test_teacher_loss_weighted_and_masked():
    pred = torch.zeros(1, 2, 3)
    target = torch.tensor([[[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]])  # per-token MSE 1 and 4
    weights = torch.tensor([[0.75, 0.25]])
    removed = torch.tensor([[0.0, 1.0]])
    assert teacher_loss(pred, target, weights, removed).item() == pytest.approx(0.75 + 1.0)
    assert teacher_loss(pred, target, None, removed).item() == pytest.approx(4.0)


def test_distillation_loss_stops_teacher_gradient():
    teacher = torch.ones(1, 2, 2, requires_grad=True)
    student = torch.zeros(1, 2, 2, requires_grad=True)
    loss = distillation_loss(student, teacher, torch.tensor([[1.0, 0.0]]))
    loss.backward()
    assert loss.item() == pytest.approx(1.0)
    assert teacher.grad is None and student.grad is not None
