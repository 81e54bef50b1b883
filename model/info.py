"""Model size and cost: parameters per part and FLOPs per frame, counted analytically.

FLOPs count multiply-adds as two operations and cover convolutions, linear layers and the two
attention matrix products (softmax, norms and activations are left out, as is usual). At the
reference configuration one pass costs 2.67 GMAC = 5.34 GFLOP per frame, matching the reference
measurement (METHOD.md). PyTorch's FlopCounterMode misses scaled_dot_product_attention on the CPU.
"""

from __future__ import annotations

from typing import Any

from model.config import ModelConfig


def _block_macs(dim: int, grid_tokens: int, mlp_ratio: float) -> int:
    n = grid_tokens + 1  # with the class token
    hidden = int(dim * mlp_ratio)
    conv_qkv = 3 * grid_tokens * dim * 9  # depth-wise 3x3
    linear_qkv_out = 4 * n * dim * dim
    attention = 2 * n * n * dim  # q k^T and attn v
    mlp = 2 * grid_tokens * dim * hidden  # the class token skips the MLP
    return conv_qkv + linear_qkv_out + attention + mlp


def pass_macs(cfg: ModelConfig, with_student: bool = True) -> dict[str, int]:
    """Multiply-adds of one masked pass over one frame, by part."""
    rows, cols = cfg.grid
    tokens, kept = rows * cols, rows * cols // 2
    p, d, dd = cfg.patch_size, cfg.embed_dim, cfg.decoder_dim
    head = (tokens + 1) * dd * p * p * cfg.out_chans
    encoder = tokens * cfg.in_chans * p * p * d + cfg.depth * _block_macs(d, kept, cfg.mlp_ratio)
    teacher = (kept + 1) * d * dd + cfg.decoder_depth * _block_macs(dd, tokens, cfg.mlp_ratio) + head
    student = _block_macs(dd, tokens, cfg.mlp_ratio) + head if with_student else 0
    return {"encoder": encoder, "teacher": teacher, "student": student}


def inference_passes(cfg: ModelConfig) -> int:
    """Network passes per scored frame: the masking's passes on each of the scoring's views."""
    return (2 if cfg.inference_masking == "complementary" else 1) * cfg.scoring.views


def describe(cfg: ModelConfig, parameters: dict[str, int]) -> dict[str, Any]:
    """Everything ``aedmae model-info`` prints."""
    one_pass = sum(pass_macs(cfg).values())
    passes = inference_passes(cfg)
    return {
        "parameters": parameters,
        "image_size": list(cfg.image_size),
        "patch_size": cfg.patch_size,
        "grid": list(cfg.grid),
        "inference_masking": cfg.inference_masking,
        "grid_shifts": cfg.scoring.grid_shifts,
        "time_reversal": cfg.scoring.time_reversal,
        "inference_passes": passes,
        "gflops_per_frame": {
            "one_pass": round(2 * one_pass / 1e9, 3),  # the reference's work: one 50% mask
            "deployed": round(2 * one_pass * passes / 1e9, 3),  # every token scored
        },
        "gmacs_per_pass_by_part": {k: round(v / 1e9, 3) for k, v in pass_macs(cfg).items()},
    }


def format_table(info: dict[str, Any]) -> str:
    p, g = info["parameters"], info["gflops_per_frame"]
    rows = [
        ("parameters, total", f"{p['total']:,}"),
        ("  encoder", f"{p['encoder']:,}"),
        ("  teacher decoder", f"{p['teacher']:,}"),
        ("  student decoder (own)", f"{p['student']:,}"),
        ("input", f"{info['image_size'][0]}x{info['image_size'][1]}, patch {info['patch_size']}, "
                  f"grid {info['grid'][0]}x{info['grid'][1]}"),
        ("inference", f"{info['inference_masking']} masking on {info['grid_shifts']} grid(s)"
                      f"{' x 2 time directions' if info['time_reversal'] else ''}: "
                      f"{info['inference_passes']} pass(es)"),
        ("GFLOPs/frame, one pass", f"{g['one_pass']:.3f}"),
        ("GFLOPs/frame, deployed", f"{g['deployed']:.3f}"),
    ]
    if "weights_digest" in info:
        rows.append(("weights digest (SHA-256)", info["weights_digest"]))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
