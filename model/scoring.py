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
weight (1 in the paper); with ``contrast`` the score's R is divided by (ratio) or reduced by (diff)
the frame's median heatmap token. ``calibrated`` maps the score to (0, 1), 0.5 being the alert threshold.

With ``grid_shifts`` S > 1 the frames (all three) are also scored moved by half a patch (edges
repeated; see :func:`grid_offsets`), each grid with its own token statistics, and the S frame scores
(and components) are averaged; the heatmap is the mean of the S token maps, each grid's token (i, j)
covering patch (i, j) moved up/left by its shift, so it is the per-patch score blurred by half a patch.
With ``time_reversal`` every grid is scored a second time on the window reversed in time (t+3, t, t-3),
again with its own token statistics: the S views are grids x directions (:func:`scoring_views`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from model.calibration import Calibration
from model.config import ModelConfig, ScoringConfig
from model.dataset import shift_image
from model.errors import ConfigError
from model.masking import inference_keep, keep_to_mask
from model.network import AEDMAE, normalize, reconstruction_target


class FrameScores(NamedTuple):
    teacher_error: torch.Tensor  # (B,) float32
    discrepancy: torch.Tensor  # (B,) float32
    score: torch.Tensor  # (B,) float32, the frame's anomaly score
    calibrated: torch.Tensor  # (B,) float32 in (0, 1); 0.5 = alert threshold (NaN if uncalibrated)
    heatmap: torch.Tensor  # (B, h, w) float32, per-token score


def grid_offsets(cfg: ModelConfig, grids: int) -> list[tuple[int, int]]:
    """Pixel shifts (down, right) of the frames for each of ``grids`` token grids (1, 2 or 4)."""
    half = cfg.patch_size // 2
    return {1: [(0, 0)], 2: [(0, 0), (half, half)], 4: [(0, 0), (0, half), (half, 0), (half, half)]}[grids]


View = tuple[int, int, bool]  # frames moved (down, right) by pixels; window reversed in time
ONE_VIEW: list[View] = [(0, 0, False)]  # the model's own grid, forward


def scoring_views(cfg: ModelConfig, scoring: ScoringConfig | None = None) -> list[View]:
    """The views every frame is scored on: each grid of ``scoring.grid_shifts``, forward, then (with
    ``scoring.time_reversal``) each again reversed in time. ``scoring`` defaults to the model's."""
    scoring = scoring or cfg.scoring
    directions = (False, True) if scoring.time_reversal else (False,)
    return [(dy, dx, rev) for rev in directions for dy, dx in grid_offsets(cfg, scoring.grid_shifts)]


def view_frames(frames: torch.Tensor, views: list[View]) -> torch.Tensor:
    """(B, 3, H, W, C) windows -> (S*B, 3, H, W, C), view-major: each view's moved / reversed copy."""
    if views == ONE_VIEW:
        return frames
    out = []
    for dy, dx, rev in views:
        moved = shift_image(frames, dy, dx, axes=(2, 3)) if dy or dx else frames
        out.append(moved[:, [2, 1, 0]] if rev else moved)
    return torch.cat(out)


def reconstruct(model: AEDMAE, frames: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student token predictions (B, L, p*p*(C+1)) for every token of every frame.

    Args:
        frames: (B, 3, H, W, C) uint8, frames t-g, t, t+g (g = model.scoring.context_gap).
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


def token_errors(model: AEDMAE, frames: torch.Tensor, keep: torch.Tensor | None = None,
                 views: list[View] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw per-token (B, S, L) teacher error and teacher-student discrepancy of frames t on each of
    the S ``views`` (default the model's, :func:`scoring_views`)."""
    views = scoring_views(model.cfg) if views is None else views
    moved = view_frames(frames, views)
    teacher, student = reconstruct(model, moved, inference_keep(model.cfg) if keep is None else keep)
    e, d = errors_of(model, moved, teacher, student)
    b = frames.shape[0]
    return e.view(len(views), b, -1).transpose(0, 1), d.view(len(views), b, -1).transpose(0, 1)


def errors_of(model: AEDMAE, frames: torch.Tensor, teacher: torch.Tensor,
              student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (B, L) teacher error and discrepancy from :func:`reconstruct`'s outputs for ``frames``."""
    frame_t = frames[:, 1].permute(0, 3, 1, 2)  # (B, C, H, W)
    target = reconstruction_target(frame_t, None, model.cfg.patch_size).to(teacher.dtype)
    return (target - teacher).pow(2).mean(-1), (teacher - student).pow(2).mean(-1)


def pool_token_means(means: torch.Tensor, grid: tuple[int, int], radius: int) -> torch.Tensor:
    """(S, L) per-view token means -> each the largest within ``radius`` tokens of it on its grid
    (``scoring.token_stat_pool``); radius 0 returns them as they are."""
    if radius == 0:
        return means
    maps = means.reshape(means.shape[0], 1, *grid)
    return torch.nn.functional.max_pool2d(maps, 2 * radius + 1, stride=1, padding=radius).reshape(means.shape)


class Scorer(nn.Module):
    """Per-token errors (B, S, L) on the S views of the scoring config -> :class:`FrameScores`, per the
    scoring config and calibration. (B, L) errors are read as one view."""

    error_scale: torch.Tensor  # (S, L) 1 / mean teacher error of normal frames per view and token (or ones)
    discrepancy_scale: torch.Tensor  # (S, L) likewise for the discrepancy

    def __init__(self, grid: tuple[int, int], cfg: ScoringConfig | None = None,
                 calibration: Calibration | None = None, token_mean_error: torch.Tensor | None = None,
                 token_mean_discrepancy: torch.Tensor | None = None) -> None:
        super().__init__()
        self.grid = grid
        self.cfg = cfg or ScoringConfig()
        self.calibration = calibration
        num_tokens = grid[0] * grid[1]
        self.topk = max(1, round(self.cfg.topk_fraction * num_tokens))
        shape = (self.cfg.views, num_tokens)
        self.register_buffer("error_scale", self._scale(token_mean_error, shape))
        self.register_buffer("discrepancy_scale", self._scale(token_mean_discrepancy, shape))

    @staticmethod
    def _scale(mean: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
        if mean is None:
            return torch.ones(shape)
        if mean.numel() != shape[0] * shape[1]:
            raise ConfigError(f"token statistics hold {mean.numel()} values, scoring {shape[0]} view(s) (grids x "
                              f"directions) of {shape[1]} tokens needs {shape[0] * shape[1]}: refit them "
                              "(aedmae calibrate)")
        return 1 / mean.reshape(shape)

    def token_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-view, per-token normal means (S, L) this scorer divides by when normalising."""
        return 1 / self.error_scale, 1 / self.discrepancy_scale

    def _reduce(self, tokens: torch.Tensor, contrast: str = "none") -> torch.Tensor:
        """(B, S, L) -> (B,): R over each view's tokens, contrasted with that view's median token
        (lower median, as torch.median; taken with topk so that it exports), then the mean over views."""
        r = tokens.topk(self.topk, dim=2).values.mean(2) if self.cfg.reduction == "topk" else tokens.mean(2)
        if contrast != "none":
            num_tokens = tokens.shape[2]
            median = tokens.topk(num_tokens - (num_tokens - 1) // 2, dim=2).values[..., -1]
            r = r / median.clamp(min=1e-12) if contrast == "ratio" else r - median
        return r.mean(1)

    def forward(self, teacher_error: torch.Tensor, discrepancy: torch.Tensor) -> FrameScores:
        if teacher_error.dim() == 2:
            teacher_error, discrepancy = teacher_error.unsqueeze(1), discrepancy.unsqueeze(1)
        if not torch.jit.is_tracing() and teacher_error.shape[1] != self.cfg.views:
            raise ConfigError(f"errors on {teacher_error.shape[1]} view(s), the scorer averages {self.cfg.views} "
                              "(model.scoring.grid_shifts x 2 with time_reversal)")
        if self.cfg.token_normalization:
            teacher_error = teacher_error * self.error_scale
            discrepancy = discrepancy * self.discrepancy_scale
        tokens = teacher_error + self.cfg.discrepancy_weight * discrepancy
        score = self._reduce(tokens, self.cfg.contrast)
        calibrated = self.calibration.apply(score) if self.calibration else torch.full_like(score, float("nan"))
        return FrameScores(self._reduce(teacher_error), self._reduce(discrepancy), score, calibrated,
                           tokens.mean(1).view(-1, self.grid[0], self.grid[1]))

    def describe(self) -> dict[str, Any]:
        return {"scoring": vars(self.cfg) | {"topk_tokens": self.topk},
                "calibration": self.calibration.to_dict() if self.calibration else None}


def score_frames(model: AEDMAE, frames: torch.Tensor, scorer: Scorer | None = None,
                 keep: torch.Tensor | None = None) -> FrameScores:
    """Anomaly scores of frames t given (B, 3, H, W, C) uint8 frames t-g, t, t+g (model.window).

    ``keep`` defaults to the model's inference masking plan; ``scorer`` to the paper's scoring
    without calibration (on the views the scorer averages). The model must be in eval mode.
    Deterministic for complementary and fixed masking.
    """
    scorer = scorer if scorer is not None else Scorer(model.cfg.grid).to(frames.device)
    return scorer(*token_errors(model, frames, keep, scoring_views(model.cfg, scorer.cfg)))
