"""The self-distilled masked auto-encoder (Ristea et al., CVPR 2024), read top to bottom.

Shapes: B batch, T = 3 frames (t-g, t, t+g; g = model.scoring.context_gap, 3 by default), C colour
channels, (H, W) model resolution, p patch, (h, w) = (H/p, W/p) token grid, L = h*w tokens, Lk = L/2
kept tokens, D width.

    frames (B, 3, H, W, C) uint8 -> normalise -> (B, 3C, H, W) in [-1, 1]
    -> patch embedding (B, L, D) -> keep Lk tokens -> [cls] + (h, w/2) grid -> encoder blocks
    -> decoder embedding, mask tokens back in place -> teacher blocks -> teacher head (B, L, p*p*(C+1))
                                              \\-> after block `student_branch`: student block -> head

The output per pixel is the clean frame t (C channels) and an anomaly map (1 channel, +1 = anomaly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W, C) uint8 frames t-g, t, t+g -> (B, 3C, H, W) float in [-1, 1]."""
    b, t, h, w, c = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w)  # (B, 3C, H, W)
    return x.float() / 127.5 - 1.0


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, K, H, W) -> (B, L, p*p*K), values ordered (row-in-patch, col-in-patch, channel)."""
    b, k, h, w = images.shape
    x = images.reshape(b, k, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, K)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * k)


def unpatchify(tokens: torch.Tensor, patch: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, L, p*p*K) -> (B, K, H, W); the inverse of :func:`patchify`."""
    b, _, n = tokens.shape
    k = n // (patch * patch)
    x = tokens.reshape(b, grid[0], grid[1], patch, patch, k)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, K, h, p, w, p)
    return x.reshape(b, k, grid[0] * patch, grid[1] * patch)


def _to_grid(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, D) -> (B, D, h, w)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class ConvProjection(nn.Module):
    """Depth-wise 3x3 conv + BatchNorm over the token grid: CvT's q/k/v projection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B, h*w, D)."""
        return self.bn(self.conv(grid)).flatten(2).transpose(1, 2)


class CvTAttention(nn.Module):
    """Multi-head attention whose q/k/v come from conv projections of the grid; the class token
    joins q/k/v unprojected by the convs (as in CvT). Scale is dim**-0.5, as in the reference."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = dim**-0.5
        self.conv_q, self.conv_k, self.conv_v = ConvProjection(dim), ConvProjection(dim), ConvProjection(dim)
        self.proj_q = nn.Linear(dim, dim)
        self.proj_k = nn.Linear(dim, dim)
        self.proj_v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, nh, 1+hw, d/nh)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, 1+h*w, D) -> (B, 1+h*w, D)."""
        cls, grid = x[:, :1], _to_grid(x[:, 1:], h, w)
        q = self._heads(self.proj_q(torch.cat([cls, self.conv_q(grid)], dim=1)))
        k = self._heads(self.proj_k(torch.cat([cls, self.conv_k(grid)], dim=1)))
        v = self._heads(self.proj_v(torch.cat([cls, self.conv_v(grid)], dim=1)))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, nh, 1+hw, d/nh)
        out = out.transpose(1, 2).reshape(x.shape)
        return self.proj(out)


class CvTBlock(nn.Module):
    """LayerNorm -> conv attention -> residual; LayerNorm -> MLP of two 1x1 convs -> residual.

    A 1x1 conv over the grid is a per-token linear layer; it is written as ``nn.Linear`` on the
    token sequence to avoid two layout copies per block. As in the reference code, the MLP leaves
    the class token as it is, so its residual adds the normalised class token to itself.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CvTAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, 1+h*w, D) -> (B, 1+h*w, D)."""
        x = x + self.attn(self.norm1(x), h, w)
        y = self.norm2(x)
        return x + torch.cat([y[:, :1], self.mlp(y[:, 1:])], dim=1)


class AEDMAE(nn.Module):
    """Encoder, teacher decoder and student decoder sharing one backbone."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        p, d, dd = cfg.patch_size, cfg.embed_dim, cfg.decoder_dim
        head_out = p * p * cfg.out_chans
        # encoder
        self.patch_embed = nn.Conv2d(cfg.in_chans, d, kernel_size=p, stride=p)
        self.patch_norm = nn.LayerNorm(d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(CvTBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)
        # teacher decoder
        self.teacher_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.teacher_blocks = nn.ModuleList(
            CvTBlock(dd, cfg.num_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.decoder_depth)
        )
        self.teacher_norm = nn.LayerNorm(dd)
        self.teacher_head = nn.Linear(dd, head_out)
        # student decoder: branches after teacher block `student_branch`
        self.student_block = CvTBlock(dd, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
        self.student_norm = nn.LayerNorm(dd)
        self.student_head = nn.Linear(dd, head_out)
        self.apply(init_weights)

    # -- parameter groups (model-info, freezing) ----------------------------------------------------
    def encoder_modules(self) -> list[nn.Module | nn.Parameter]:
        return [self.patch_embed, self.patch_norm, self.cls_token, self.blocks, self.norm]

    def teacher_modules(self) -> list[nn.Module | nn.Parameter]:
        return [self.teacher_embed, self.mask_token, self.teacher_blocks, self.teacher_norm, self.teacher_head]

    def student_modules(self) -> list[nn.Module | nn.Parameter]:
        return [self.student_block, self.student_norm, self.student_head]

    # -- forward --------------------------------------------------------------------------------------
    def forward_encoder(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, 3C, H, W) in [-1, 1], keep (B, Lk) -> latent (B, 1+Lk, D), class token first."""
        tokens = self.patch_norm(self.patch_embed(x).flatten(2).transpose(1, 2))  # (B, L, D)
        kept = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[2]))  # (B, Lk, D)
        z = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), kept], dim=1)
        h, w = self.cfg.grid
        for block in self.blocks:
            z = block(z, h, w // 2)
        return self.norm(z)

    def forward_decoders(
        self, latent: torch.Tensor, keep: torch.Tensor, with_student: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """latent (B, 1+Lk, D), keep (B, Lk) -> teacher, student predictions (B, L, p*p*(C+1))."""
        z = self.teacher_embed(latent)  # (B, 1+Lk, Dd)
        b, _, dd = z.shape
        h, w = self.cfg.grid
        full = self.mask_token.to(z.dtype).expand(b, h * w, dd)  # z is bf16/fp16 under CUDA autocast
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, dd), z[:, 1:])  # (B, L, Dd)
        z = torch.cat([z[:, :1], full], dim=1)
        student = None
        for i, block in enumerate(self.teacher_blocks):
            if with_student and i == self.cfg.student_branch:
                s = self.student_block(z, h, w)
                student = self.student_head(self.student_norm(s))[:, 1:]
            z = block(z, h, w)
        teacher = self.teacher_head(self.teacher_norm(z))[:, 1:]
        return teacher, student

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor, with_student: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, 3C, H, W) in [-1, 1], keep (B, Lk) kept-token indices ->
        (teacher, student) token predictions (B, L, p*p*(C+1)); student is None without it."""
        return self.forward_decoders(self.forward_encoder(x, keep), keep, with_student)


def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm | nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(modules: list[nn.Module | nn.Parameter]) -> int:
    total = 0
    for m in modules:
        total += m.numel() if isinstance(m, nn.Parameter) else sum(p.numel() for p in m.parameters())
    return total


def reconstruction_target(frame_t: torch.Tensor, anomaly_mask: torch.Tensor | None, patch: int) -> torch.Tensor:
    """What the network should output, as tokens (B, L, p*p*(C+1)).

    Args:
        frame_t: (B, C, H, W) uint8, the clean frame t.
        anomaly_mask: (B, 1, H, W) float in {0, 1}, or None for "no anomaly" (inference).
    The image part is scaled to [-1, 1]; the anomaly-map channel is +1 on anomalies, -1 elsewhere.
    """
    image = frame_t.float() / 127.5 - 1.0
    anomaly_map = -torch.ones_like(image[:, :1]) if anomaly_mask is None else anomaly_mask * 2.0 - 1.0
    return patchify(torch.cat([image, anomaly_map], dim=1), patch)
