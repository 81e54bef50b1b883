"""The scoring definition: the one place that turns network outputs into anomaly scores.

Evaluation, the ONNX export and the service all use :class:`Scorer` (the exported graph is this
code traced), so a score means the same thing everywhere.

Per token l of frame t, with the teacher's reconstruction taken from the pass that hid the token
(``complementary`` masking; ``fixed``/``random`` use their single pass for every token):
    teacher_error[l] = mean over the patch's values of (target - teacher)^2
    discrepancy[l]   = mean over the patch's values of (teacher - student)^2
where target = frame t in [-1, 1] plus an anomaly map of -1 (normal). With token normalisation
each is divided by its mean over held-out normal frames at that token. Then, per frame:
    heatmap[l]    = teacher_error[l] + w * discrepancy[l]
    teacher_error = R(teacher_error[l]), discrepancy = R(discrepancy[l]), score = R(heatmap[l])
where R is the mean over tokens (paper) or the mean of the top-k tokens, and w the discrepancy
weight (1 in the paper). ``calibrated`` maps the score to (0, 1), 0.5 being the alert threshold.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from model.calibration import Calibration
from model.config import ScoringConfig
from model.masking import inference_keep, keep_to_mask
from model.network import AEDMAE, normalize, reconstruction_target


class FrameScores(NamedTuple):
    teacher_error: torch.Tensor  # (B,) float32
    discrepancy: torch.Tensor  # (B,) float32
    score: torch.Tensor  # (B,) float32, the frame's anomaly score
    calibrated: torch.Tensor  # (B,) float32 in (0, 1); 0.5 = alert threshold (NaN if uncalibrated)
    heatmap: torch.Tensor  # (B, h, w) float32, per-token score


def reconstruct(model: AEDMAE, frames: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student token predictions (B, L, p*p*(C+1)) for every token of every frame.

    Args:
        frames: (B, 3, H, W, C) uint8, frames t-3, t, t+3.
        keep: (P, L/2) keep indices of the P passes (see ``model.masking``).
    With P > 1 the passes tile the grid and each token comes from the pass that removed it.
    """
    b = frames.shape[0]
    passes = keep.shape[0]
    x = normalize(frames).repeat(passes, 1, 1, 1)  # (P*B, 3C, H, W), pass-major
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


def token_errors(model: AEDMAE, frames: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Raw per-token (B, L) teacher error and teacher-student discrepancy of frames t."""
    teacher, student = reconstruct(model, frames, inference_keep(model.cfg) if keep is None else keep)
    return errors_of(model, frames, teacher, student)


def errors_of(model: AEDMAE, frames: torch.Tensor, teacher: torch.Tensor,
              student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (B, L) teacher error and discrepancy from :func:`reconstruct`'s outputs for ``frames``."""
    frame_t = frames[:, 1].permute(0, 3, 1, 2)  # (B, C, H, W)
    target = reconstruction_target(frame_t, None, model.cfg.patch_size).to(teacher.dtype)
    return (target - teacher).pow(2).mean(-1), (teacher - student).pow(2).mean(-1)


class Scorer(nn.Module):
    """Per-token errors (B, L) -> :class:`FrameScores`, per the scoring config and calibration."""

    error_scale: torch.Tensor  # (L,) 1 / mean teacher error of normal frames per token (or ones)
    discrepancy_scale: torch.Tensor  # (L,) likewise for the discrepancy

    def __init__(self, grid: tuple[int, int], cfg: ScoringConfig | None = None,
                 calibration: Calibration | None = None, token_mean_error: torch.Tensor | None = None,
                 token_mean_discrepancy: torch.Tensor | None = None) -> None:
        super().__init__()
        self.grid = grid
        self.cfg = cfg or ScoringConfig()
        self.calibration = calibration
        num_tokens = grid[0] * grid[1]
        self.topk = max(1, round(self.cfg.topk_fraction * num_tokens))
        ones = torch.ones(num_tokens)
        self.register_buffer("error_scale", ones if token_mean_error is None else 1 / token_mean_error.flatten())
        self.register_buffer("discrepancy_scale",
                             ones if token_mean_discrepancy is None else 1 / token_mean_discrepancy.flatten())

    def token_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-token normal means (L,) this scorer divides by when normalising."""
        return 1 / self.error_scale, 1 / self.discrepancy_scale

    def _reduce(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cfg.reduction == "topk":
            return tokens.topk(self.topk, dim=1).values.mean(1)
        return tokens.mean(1)

    def forward(self, teacher_error: torch.Tensor, discrepancy: torch.Tensor) -> FrameScores:
        if self.cfg.token_normalization:
            teacher_error = teacher_error * self.error_scale
            discrepancy = discrepancy * self.discrepancy_scale
        tokens = teacher_error + self.cfg.discrepancy_weight * discrepancy
        score = self._reduce(tokens)
        calibrated = self.calibration.apply(score) if self.calibration else torch.full_like(score, float("nan"))
        return FrameScores(self._reduce(teacher_error), self._reduce(discrepancy), score, calibrated,
                           tokens.view(-1, self.grid[0], self.grid[1]))

    def describe(self) -> dict[str, Any]:
        return {"scoring": vars(self.cfg) | {"topk_tokens": self.topk},
                "calibration": self.calibration.to_dict() if self.calibration else None}


def score_frames(model: AEDMAE, frames: torch.Tensor, scorer: Scorer | None = None,
                 keep: torch.Tensor | None = None) -> FrameScores:
    """Anomaly scores of frames t given (B, 3, H, W, C) uint8 frames t-3, t, t+3.

    ``keep`` defaults to the model's inference masking plan; ``scorer`` to the paper's scoring
    without calibration. The model must be in eval mode. Deterministic for complementary and
    fixed masking.
    """
    scorer = scorer if scorer is not None else Scorer(model.cfg.grid)
    return scorer(*token_errors(model, frames, keep))
