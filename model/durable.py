"""Replacing files so that a crash or a power cut leaves the old version or the new one, never an empty
or half-written file: the one way the project publishes checkpoints, training state, exported models,
the camera store and the frame cache.

A rename is atomic, but on a power cut the renamed file's data may not have reached the disk yet
(ext4 and XFS can leave it empty), and the rename itself is durable only once its folder is synced.
So each temporary file is synced, then renamed over its target, then the folders are synced."""

from __future__ import annotations

import os
from pathlib import Path


def sync(path: str | Path) -> None:
    """fsync a file or a folder."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(*moves: tuple[str | Path, str | Path]) -> None:
    """Each ``(temporary, target)`` in order: sync every temporary file, rename each over its target,
    then sync the folders the targets are in. Renames are atomic one by one, not together."""
    for tmp, _ in moves:
        sync(tmp)
    for tmp, target in moves:
        os.replace(tmp, target)
    for folder in dict.fromkeys(Path(target).resolve().parent for _, target in moves):
        sync(folder)
