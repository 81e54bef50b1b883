"""Token masks. Convention (as in MAE): a mask is 0 where a token is kept, 1 where it is removed.

Masks are given as *keep indices*: ``keep`` (B, L/2) int64, the raster-order indices of the kept
tokens, sorted ascending. The encoder lays the kept tokens out as an (H, W/2) grid for its
convolutions, so the order matters; sorting makes it fixed.

The checkerboard of phase ``p`` keeps token (i, j) iff ``(i + j) % 2 == p``: every row keeps W/2
tokens, so the kept tokens form a spatially coherent (H, W/2) grid, and the two phases tile the
grid. That is what makes deterministic, full-coverage inference possible (``complementary``).
"""

from __future__ import annotations

import torch

from model.config import ModelConfig


def checkerboard_keep(grid: tuple[int, int], phase: int) -> torch.Tensor:
    """Keep indices (L/2,) int64 of the checkerboard of the given phase (0 or 1)."""
    rows, cols = grid
    i = torch.arange(rows).view(-1, 1)
    j = torch.arange(cols).view(1, -1)
    keep = ((i + j) % 2 == phase).flatten()
    return torch.nonzero(keep).flatten()


def inference_keep(cfg: ModelConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep indices (P, L/2) for the P inference passes of ``cfg.inference_masking``.

    complementary: P=2 (both checkerboard phases); fixed: P=1 (phase 0); random: P=1, drawn from
    ``generator`` (the reference code's behaviour, kept for ablations).
    """
    grid = cfg.grid
    if cfg.inference_masking == "complementary":
        return torch.stack([checkerboard_keep(grid, 0), checkerboard_keep(grid, 1)])
    if cfg.inference_masking == "fixed":
        return checkerboard_keep(grid, 0).unsqueeze(0)
    return random_keep(grid, 1, generator)


def random_keep(grid: tuple[int, int], batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, L/2) sorted keep indices of a uniformly random half of the tokens, per sample."""
    num_tokens = grid[0] * grid[1]
    noise = torch.rand(batch, num_tokens, generator=generator)
    keep = torch.argsort(noise, dim=1)[:, : num_tokens // 2]
    return torch.sort(keep, dim=1).values


def train_keep(cfg: ModelConfig, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, L/2) keep indices for one training batch, per ``cfg.train_masking``."""
    if cfg.train_masking == "random":
        return random_keep(cfg.grid, batch, generator)
    phases = torch.randint(0, 2, (batch,), generator=generator)
    both = torch.stack([checkerboard_keep(cfg.grid, 0), checkerboard_keep(cfg.grid, 1)])
    return both[phases]


def keep_to_mask(keep: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(B, L) float mask from (B, L/2) keep indices: 0 is keep, 1 is remove."""
    mask = torch.ones(keep.shape[0], num_tokens, device=keep.device)
    return mask.scatter(1, keep, 0.0)
