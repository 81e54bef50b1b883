"""The model that ships with aedmae (trained on UCSD Ped2; see the README's model card)."""

from __future__ import annotations

from pathlib import Path

from model.errors import CheckpointError

SHIPPED_DIR = Path(__file__).parent / "weights" / "ped2"


def shipped_model() -> Path:
    """The folder of the shipped checkpoint."""
    if not (SHIPPED_DIR / "model.json").is_file():
        raise CheckpointError(f"the shipped model is missing from {SHIPPED_DIR}; pass --model CKPT")
    return SHIPPED_DIR
