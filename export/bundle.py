"""The deployable unit: an ONNX graph (+ optional TensorRT engine) and a JSON sidecar. The service
loads bundles through this module, which needs neither torch nor training code.

Graph contract (stable names):
    input  ``frames``         (B, 3, H, W, C) uint8: frames t-g, t, t+g of B frames t (g = the
                              sidecar's io.lookahead_frames, 3 by default), at model resolution,
                              RGB (C=3) or gray (C=1), rows top to bottom
    output ``score``          (B,) float32 anomaly score (the scoring definition in model/scoring.py)
           ``calibrated``     (B,) float32 in [0, 1], 0.5 = alert threshold
           ``teacher_error``  (B,) float32 teacher reconstruction error component
           ``discrepancy``    (B,) float32 teacher-student discrepancy component
           ``heatmap``        (B, h, w) float32 per-token score
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from model import durable
from model.checkpoint import META, digest, is_checkpoint, sha256
from model.errors import AedmaeError, CheckpointError
from model.window import DEFAULT_GAP

T = TypeVar("T")

INPUT_NAME = "frames"
OUTPUT_NAMES = ("score", "calibrated", "teacher_error", "discrepancy", "heatmap")
SIDECAR_FORMAT = "aedmae-bundle/1"
# Parity tolerances. fp32: the 1e-4 relative on scores; heatmaps are compared against their
# own scale (max |value| of the reference), since tokens near zero make a relative test meaningless.
TOLERANCES = {
    "fp32": {"score_rtol": 1e-4, "heatmap_atol_of_max": 1e-4},
    # fp16 tolerances were measured on the shipped model (benchmarks/RESULTS.md) and set with margin.
    "fp16": {"score_rtol": 2e-2, "heatmap_atol_of_max": 2e-2},
    # bf16 (torch CUDA autocast) keeps 8 mantissa bits to fp16's 11: on the shipped model's golden clip
    # it differed by 1.5% (scores) and 1.2% (heatmaps) on an H200 (fp16: 0.2%, 0.1%; RESULTS.md).
    "bf16": {"score_rtol": 5e-2, "heatmap_atol_of_max": 5e-2},
    # int8 (`export onnx --precision int8`, static): on the shipped model's golden clip 2.4% (scores) and
    # 1.7% (heatmaps); dynamic int8 1.0% and 1.6% (RESULTS.md, "int8 that a frame's batch does not change").
    "int8": {"score_rtol": 5e-2, "heatmap_atol_of_max": 5e-2},
}


def golden_inputs(image_size: tuple[int, int], channels: int) -> np.ndarray:
    """(N, 3, H, W, C) uint8 model inputs of the golden clip (see model/golden.py)."""
    from model.golden import golden_clip
    from model.window import clip_windows

    clip = golden_clip(image_size[0], image_size[1], channels)
    return clip_windows(clip, np.arange(len(clip)))


def sidecar_path(graph: str | Path) -> Path:
    p = Path(graph)
    return p.with_name(p.name + ".json")


class ExportError(AedmaeError):
    """An export failed its own checks, or could not be written."""


def write_beside(out: Path, write: Callable[[Path], T]) -> T:
    """``write(draft)`` writes a model file and its sidecar at ``draft``, in a fresh folder beside
    ``out``, and checks them; only when it returns are both moved to ``out`` (the same file system, so
    each move is atomic; synced as model/durable.py does). An exception leaves any earlier export at
    ``out`` as it was, and no draft."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".aedmae-export-", dir=out.parent))
    except OSError as e:
        raise ExportError(f"{out}: cannot write there ({e.strerror or e})") from None
    try:
        draft = work / out.name
        result = write(draft)
        durable.replace((draft, out), (sidecar_path(draft), sidecar_path(out)))
        return result
    except OSError as e:
        raise ExportError(f"{out}: cannot write there ({e.strerror or e})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class Bundle:
    graph: Path  # the .onnx file (or .engine for TensorRT)
    sidecar: dict[str, Any]

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.sidecar["model"]["image_size"]
        return int(h), int(w)

    @property
    def channels(self) -> int:
        return int(self.sidecar["model"]["channels"])

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.sidecar["io"]["heatmap_grid"]
        return int(h), int(w)

    @property
    def context_gap(self) -> int:
        """Frames between the window's frames (model.scoring.context_gap; 3 in sidecars older than it)."""
        return int(self.sidecar["model"]["scoring"].get("context_gap", DEFAULT_GAP))

    @property
    def grid_shifts(self) -> int:
        """Token grids each frame is scored on (model.scoring.grid_shifts; 1 in sidecars older than it)."""
        return int(self.sidecar["model"]["scoring"].get("grid_shifts", 1))

    @property
    def precision(self) -> str:
        return str(self.sidecar["precision"])

    def golden_inputs(self) -> np.ndarray:
        return golden_inputs(self.image_size, self.channels)

    def golden_reference(self) -> dict[str, np.ndarray]:
        g = self.sidecar["golden"]
        return {k: np.asarray(v, dtype=np.float32) for k, v in g["reference"].items()}


def load_bundle(path: str | Path, verify_hash: bool = True) -> Bundle:
    """A bundle from its graph file (``model.onnx``) or its folder (the first ``*.onnx`` in it).

    Raises:
        CheckpointError: missing files, an unreadable sidecar, or a graph whose hash differs from
        the sidecar's (the two were not exported together).
    """
    p = Path(path)
    if p.is_dir():
        graphs = sorted(p.glob("*.onnx"))
        if not graphs and is_checkpoint(p):
            raise CheckpointError(f"{p}: a checkpoint without its ONNX graph; export it first: "
                                  f"aedmae export onnx --model {p} --out {p / 'model.onnx'}")
        if not graphs:
            raise CheckpointError(f"{p}: no .onnx model in this folder")
        p = graphs[0]
    if not p.is_file():
        raise CheckpointError(f"{p}: no such model file")
    if p.suffix not in (".onnx", ".engine"):  # e.g. the checkpoint's model.safetensors
        graphs = sorted(p.parent.glob("*.onnx"))
        raise CheckpointError(f"{p}: neither an ONNX graph nor a TensorRT engine; give the model folder or its "
                              ".onnx (.engine) file" + (f": {graphs[0]}" if graphs else
                                                        "; export one first: aedmae export onnx"))
    side = sidecar_path(p)
    if not side.is_file():
        raise CheckpointError(f"{p}: its sidecar {side.name} is missing (re-export with `aedmae export onnx`)")
    try:
        sidecar = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{side}: unreadable sidecar ({e})") from None
    found = sidecar.get("format") if isinstance(sidecar, dict) else f"a JSON {type(sidecar).__name__}"
    if found != SIDECAR_FORMAT:
        raise CheckpointError(f"{side}: unknown format {found!r}, expected {SIDECAR_FORMAT}")
    if verify_hash and sidecar.get("sha256") != sha256(p):
        raise CheckpointError(f"{p}: does not match its sidecar's hash (corrupt, or from another export)")
    if verify_hash and _stale(p.parent, sidecar):
        raise CheckpointError(f"{p}: exported from another version of the checkpoint beside it (retrained or "
                              f"recalibrated since); export it again: aedmae export onnx --model {p.parent} --out {p}")
    return Bundle(p, sidecar)


def _stale(folder: Path, sidecar: dict[str, Any]) -> bool:
    """Whether the checkpoint in ``folder`` (if any) is not the one the graph was exported from: by the
    digest the sidecar records, or, for graphs exported before sidecars recorded it (the shipped one
    among them), by the calibration threshold, which any retraining or recalibration changes."""
    beside = digest(folder)
    if beside is None:
        return False
    if "source_checkpoint_sha256" in sidecar:
        return bool(sidecar["source_checkpoint_sha256"] != beside)
    try:
        threshold = json.loads((folder / META).read_text()).get("calibration", {}).get("threshold")
    except (OSError, json.JSONDecodeError):
        return True
    return threshold != (sidecar.get("calibration") or {}).get("threshold")


def infer_in_batches(runner: Any, frames: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """``runner.infer`` (a serving backend or a TensorRT runner) over (N, 3, H, W, C) frames in batches
    of at most ``batch``, the outputs concatenated."""
    outs = [runner.infer(frames[i : i + batch]) for i in range(0, len(frames), batch)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def compare_outputs(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], precision: str) -> dict[str, Any]:
    """Parity of two backends' outputs on the same frames, under the precision's tolerances."""
    tol = TOLERANCES[precision]
    scale = max(float(np.abs(ref["score"]).max()), 1e-12)
    score_rel = float(np.max(np.abs(got["score"] - ref["score"]) / np.maximum(np.abs(ref["score"]), 1e-6 * scale)))
    heat_scale = max(float(np.abs(ref["heatmap"]).max()), 1e-12)
    heat_err = float(np.abs(got["heatmap"] - ref["heatmap"]).max() / heat_scale)
    cal_diff = np.abs(got["calibrated"] - ref["calibrated"])
    cal_err = float(np.nanmax(cal_diff)) if np.isfinite(cal_diff).any() else 0.0  # NaN: uncalibrated model
    ok = score_rel <= tol["score_rtol"] and heat_err <= tol["heatmap_atol_of_max"]
    return {"ok": bool(ok), "score_max_rel_err": score_rel, "heatmap_max_err_of_max": heat_err,
            "calibrated_max_abs_err": cal_err, "tolerance": tol}
