"""Checkpoints: ``model.safetensors`` (weights and BatchNorm statistics) beside ``model.json``
(model config, train config, data summary, calibration, code version). Either file, or the folder
holding them, names the checkpoint.

The two files cannot be replaced together atomically, so every save writes one random ``save_id``
into both (the weights' safetensors header and the JSON): a save interrupted between its two renames,
or one file copied over from another checkpoint, is refused on reading instead of pairing weights
with another save's config and token statistics (which would score silently wrong). Checkpoints
written before save ids (the shipped one) carry none in either file and read as before."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import model as model_pkg
from model import durable
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


def weights_digest(folder: str | Path) -> str:
    """SHA-256 of the weights alone: every tensor's name, dtype, shape and bytes in name order, without
    the safetensors header's metadata (whose save_id differs on every save, so the file's SHA-256 does
    too). Two runs of a deterministic recipe give the same; ``aedmae model-info --model`` prints it."""
    path = resolve(folder) / WEIGHTS
    header, start = _safetensors_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    h = hashlib.sha256()
    for name in sorted(k for k in header if k != "__metadata__"):
        begin, end = header[name]["data_offsets"]
        h.update(json.dumps([name, header[name]["dtype"], header[name]["shape"]]).encode())
        h.update(data[begin:end])
    return h.hexdigest()


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
    if not p.exists():
        raise CheckpointError(f"{path}: no such file or folder (a checkpoint is a folder holding {WEIGHTS} and {META})")
    folder = p if p.is_dir() else p.parent
    if not is_checkpoint(folder):
        raise CheckpointError(f"{path}: not a checkpoint (expected {WEIGHTS} and {META} in {folder})")
    return folder


def save(
    net: AEDMAE, out_dir: str | Path, train_cfg: TrainConfig | None = None, **meta: Any
) -> Path:
    """Write weights and metadata, each atomically and durably (model/durable.py); returns the folder."""
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
        "save_id": uuid.uuid4().hex,
    }
    tmp_w, tmp_m = folder / (WEIGHTS + ".tmp"), folder / (META + ".tmp")
    save_file(state, str(tmp_w), metadata={"format": FORMAT, "save_id": record["save_id"]})
    tmp_m.write_text(json.dumps(record, indent=2) + "\n")
    # safetensors creates its file readable by the owner only; the weights are no more secret than the
    # metadata, and a model folder is often served by another user (the containers run as 10001)
    tmp_w.chmod(stat.S_IMODE(tmp_m.stat().st_mode))
    durable.replace((tmp_w, folder / WEIGHTS), (tmp_m, folder / META))
    return folder


def read_meta(path: str | Path) -> dict[str, Any]:
    folder = resolve(path)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder / META}: unreadable checkpoint metadata ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{folder / META}: checkpoint metadata must be a JSON object, not {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder / META}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
    weights_id = weights_metadata(folder / WEIGHTS).get("save_id")
    if weights_id != meta.get("save_id"):
        raise CheckpointError(
            f"{folder}: {WEIGHTS} (save {weights_id or 'without id'}) and {META} (save "
            f"{meta.get('save_id') or 'without id'}) come from different saves: a save was interrupted "
            "or one file was replaced by hand. Restore both files from one save, or train again."
        )
    return meta


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's header (8-byte little-endian length, then JSON) and the offset its tensor
    data starts at, read without torch or reading the tensors.

    Raises:
        CheckpointError: not a safetensors file.
    """
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= 100 << 20:
                raise ValueError(f"header length {size}")
            header = json.loads(f.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        return header, 8 + size
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: corrupt weights file ({e})") from None


def weights_metadata(path: Path) -> dict[str, Any]:
    """The string metadata in a safetensors file's header.

    Raises:
        CheckpointError: not a safetensors file.
    """
    metadata = _safetensors_header(path)[0].get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


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
