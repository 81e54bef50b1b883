"""Checkpoints: ``model.safetensors`` (weights and BatchNorm statistics) beside ``model.json``
(model config, train config, data summary, calibration, code version). Either file, or the folder
holding them, names the checkpoint."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import model as model_pkg
from model.config import ModelConfig, TrainConfig, from_dict, to_dict
from model.errors import CheckpointError, ConfigError

if TYPE_CHECKING:  # torch is imported by load() only: the serving path reads digest() without it
    from model.network import AEDMAE

WEIGHTS = "model.safetensors"
META = "model.json"
FORMAT = "aedmae-checkpoint/1"


def sha256(*paths: str | Path) -> str:
    """SHA-256 of the files' bytes, one after another (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def digest(folder: str | Path) -> str | None:
    """SHA-256 of a checkpoint's two files together (weights, then metadata), or None when the folder
    holds no complete checkpoint. Any re-save (training, recalibration) changes it: an exported graph
    records the digest of the checkpoint it came from, so a graph left beside a newer checkpoint is caught."""
    return sha256(Path(folder) / WEIGHTS, Path(folder) / META) if is_checkpoint(folder) else None


def is_checkpoint(folder: str | Path) -> bool:
    """Whether the folder holds both files of a checkpoint."""
    return (Path(folder) / WEIGHTS).is_file() and (Path(folder) / META).is_file()


def code_version() -> str:
    """Package version, plus the git commit when running from a checkout."""
    version = model_pkg.__version__
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{version}+g{commit}" if commit else version
    except (OSError, subprocess.SubprocessError):
        return version


def resolve(path: str | Path) -> Path:
    """The checkpoint folder for a folder, a ``model.json`` or a ``model.safetensors`` path."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if not is_checkpoint(folder):
        raise CheckpointError(f"{path}: not a checkpoint (expected {WEIGHTS} and {META} in {folder})")
    return folder


def save(
    net: AEDMAE, out_dir: str | Path, train_cfg: TrainConfig | None = None, **meta: Any
) -> Path:
    """Write weights and metadata atomically; returns the folder."""
    from safetensors.torch import save_file

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    record = {
        "format": FORMAT,
        "model": to_dict(net.cfg),
        "train": to_dict(train_cfg) if train_cfg is not None else None,
        "code_version": code_version(),
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **meta,
    }
    tmp_w, tmp_m = folder / (WEIGHTS + ".tmp"), folder / (META + ".tmp")
    save_file(state, str(tmp_w), metadata={"format": FORMAT})
    tmp_m.write_text(json.dumps(record, indent=2) + "\n")
    tmp_w.replace(folder / WEIGHTS)
    tmp_m.replace(folder / META)
    return folder


def read_meta(path: str | Path) -> dict[str, Any]:
    folder = resolve(path)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder / META}: unreadable checkpoint metadata ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder / META}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load(path: str | Path, map_location: str = "cpu") -> tuple[AEDMAE, dict[str, Any]]:
    """The model (eval mode) and its metadata.

    Raises:
        CheckpointError: missing files, corrupt weights, or weights that do not fit the config.
    """
    folder = resolve(path)
    meta = read_meta(folder)
    try:
        cfg: ModelConfig = from_dict(ModelConfig, meta["model"]).validate()
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{folder / META}: invalid model config ({e})") from None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(folder / WEIGHTS), device=map_location)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{folder / WEIGHTS}: corrupt weights file ({e})") from None
    from model.network import AEDMAE

    net = AEDMAE(cfg)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{folder}: weights do not match the model config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})"
        )
    net.load_state_dict(state)
    net.eval()
    return net, meta


def train_config(meta: dict[str, Any]) -> TrainConfig | None:
    return from_dict(TrainConfig, meta["train"]) if meta.get("train") else None
