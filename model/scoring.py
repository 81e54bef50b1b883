"""The scoring definition: the one place that turns network outputs into anomaly scores.

Evaluation, the ONNX export and the service all use :func:`score_frames` (the exported graph is
this function traced), so a score means the same thing everywhere.

Per token l of frame t, with the teacher's reconstruction taken from the pass that hid the token
(``complementary`` masking; ``fixed``/``random`` use their single pass for every token):
    teacher_error[l] = mean over the patch's values of (target - teacher)^2
    discrepancy[l]   = mean over the patch's values of (teacher - student)^2
where target = frame t in [-1, 1] plus an anomaly map of -1 (normal). Per frame:
    teacher_error = mean_l teacher_error[l], discrepancy = mean_l discrepancy[l],
    score = teacher_error + discrepancy, heatmap[l] = teacher_error[l] + discrepancy[l].
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from model.masking import inference_keep, keep_to_mask
from model.network import AEDMAE, normalize, reconstruction_target


class FrameScores(NamedTuple):
    teacher_error: torch.Tensor  # (B,) float32
    discrepancy: torch.Tensor  # (B,) float32
    score: torch.Tensor  # (B,) float32, teacher_error + discrepancy
    heatmap: torch.Tensor  # (B, h, w) float32, per-token score


def reconstruct(
    model: AEDMAE, frames: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student token predictions (B, L, p*p*(C+1)) for every token of every frame.

    Args:
        frames: (B, 3, H, W, C) uint8, frames t-3, t, t+3.
        keep: (P, L/2) keep indices of the P passes (see ``model.masking``).
    With P > 1 the passes tile the grid and each token comes from the pass that removed it.
    """
    b = frames.shape[0]
    passes, _num_kept = keep.shape
    x = normalize(frames)
    x = x.repeat(passes, 1, 1, 1)  # (P*B, 3C, H, W), pass-major
    keep_b = keep.to(x.device).repeat_interleave(b, dim=0)  # (P*B, L/2)
    teacher, student = model(x, keep_b, with_student=True)
    assert student is not None
    if passes == 1:
        return teacher, student
    num_tokens = teacher.shape[1]
    removed = keep_to_mask(keep.to(x.device), num_tokens).view(passes, 1, num_tokens, 1)
    teacher = (teacher.view(passes, b, num_tokens, -1) * removed).sum(0)
    student = (student.view(passes, b, num_tokens, -1) * removed).sum(0)
    return teacher, student


def token_scores(
    teacher: torch.Tensor, student: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) teacher error and teacher-student discrepancy per token."""
    return (target - teacher).pow(2).mean(-1), (teacher - student).pow(2).mean(-1)


def frame_scores(teacher_error: torch.Tensor, discrepancy: torch.Tensor, grid: tuple[int, int]) -> FrameScores:
    """Per-token (B, L) scores -> per-frame scores and the (B, h, w) heatmap."""
    te, dis = teacher_error.mean(1), discrepancy.mean(1)
    heatmap = (teacher_error + discrepancy).view(-1, grid[0], grid[1])
    return FrameScores(te, dis, te + dis, heatmap)


def score_frames(model: AEDMAE, frames: torch.Tensor, keep: torch.Tensor | None = None) -> FrameScores:
    """Anomaly scores of frames t given (B, 3, H, W, C) uint8 frames t-3, t, t+3.

    ``keep`` defaults to the model's inference masking plan. The model must be in eval mode.
    Deterministic for ``complementary`` and ``fixed`` masking.
    """
    cfg = model.cfg
    if keep is None:
        keep = inference_keep(cfg)
    teacher, student = reconstruct(model, frames, keep)
    frame_t = frames[:, 1].permute(0, 3, 1, 2)  # (B, C, H, W)
    target = reconstruction_target(frame_t, None, cfg.patch_size).to(teacher.dtype)
    te, dis = token_scores(teacher, student, target)
    return frame_scores(te, dis, cfg.grid)
