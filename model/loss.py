"""Training losses: the motion-gradient-weighted teacher loss and the distillation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_ANOMALY_MAGNITUDE = 128.0  # an anomaly pixel weighs at least this much, in gradient units (0..255)


def motion_weights(gradient: torch.Tensor, anomaly_mask: torch.Tensor, patch: int) -> torch.Tensor:
    """Per-token loss weights (B, L) that sum to 1 per frame (the reference code's rule).

    weight(token) = channel mean of the patch-wise max of
                    gradient + anomaly_mask * max(128, max gradient of the frame),
    so moving foreground and pasted anomalies dominate the loss and static background barely counts.
    A frame with no motion and no anomaly at all gets uniform weights.

    Args:
        gradient: (B, C, H, W) float, |frame t-1 - frame t+1| in 0..255.
        anomaly_mask: (B, 1, H, W) float in {0, 1}.
    """
    peak = gradient.amax(dim=(1, 2, 3), keepdim=True).clamp(min=MIN_ANOMALY_MAGNITUDE)
    boosted = gradient + anomaly_mask * peak
    w = F.max_pool2d(boosted, patch).mean(dim=1).flatten(1)  # (B, L)
    total = w.sum(dim=1, keepdim=True)
    uniform = torch.full_like(w, 1.0 / w.shape[1])
    return torch.where(total > 0, w / total.clamp(min=1e-12), uniform)


def per_token_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, L, P) x2 -> (B, L): mean squared error of each token."""
    return (pred - target).pow(2).mean(dim=-1)


def teacher_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None, removed: torch.Tensor
) -> torch.Tensor:
    """Stage-1 loss, averaged over the batch.

    With ``weights`` (B, L): the weighted sum of every token's MSE (kept and removed, as in the
    reference). Without: the mean MSE over removed tokens (the ablation "no motion weighting").
    ``removed`` (B, L) is the mask, 1 = removed.
    """
    mse = per_token_mse(pred, target)
    if weights is not None:
        return (mse * weights).sum(dim=1).mean()
    return (mse * removed).sum() / removed.sum()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Stage-2 loss: the student's MSE to the (detached) teacher over removed tokens."""
    mse = per_token_mse(student, teacher.detach())
    return (mse * removed).sum() / removed.sum()
