"""Checkpoint -> ONNX: normalisation, the deterministic masks, encoder, teacher + student and the
scoring definition in one graph (contract in ``export/bundle.py``), checked before success."""

from __future__ import annotations

import json
import logging
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.bundle import (
    INPUT_NAME,
    OUTPUT_NAMES,
    SIDECAR_FORMAT,
    ExportError,
    compare_outputs,
    golden_inputs,
    sha256,
    sidecar_path,
    write_beside,
)
from export.ort_fusion import ort_session
from model import checkpoint
from model.masking import inference_keep
from model.network import AEDMAE
from model.scoring import Scorer, scoring_views, token_errors

log = logging.getLogger(__name__)
OPSET = 17


class DeployedGraph(nn.Module):
    """(B, 3, H, W, C) uint8 frames -> (score, calibrated, teacher_error, discrepancy, heatmap)."""

    keep: torch.Tensor

    def __init__(self, net: AEDMAE, scorer: Scorer) -> None:
        super().__init__()
        if net.cfg.inference_masking == "random":
            raise ExportError("inference_masking=random is not deterministic and cannot be exported")
        self.net, self.scorer = net, scorer
        self.register_buffer("keep", inference_keep(net.cfg))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = self.scorer(*token_errors(self.net, frames, self.keep, scoring_views(self.net.cfg, self.scorer.cfg)))
        return s.score, s.calibrated, s.teacher_error, s.discrepancy, s.heatmap


def run_onnxruntime(path: str | Path, frames: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
    """Outputs of an ONNX graph under ONNX Runtime (CPU), in batches of ``batch``."""
    session = ort_session(path)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUT_NAMES}
    for i in range(0, len(frames), batch):
        out = session.run(list(OUTPUT_NAMES), {INPUT_NAME: frames[i : i + batch]})
        for k, v in zip(OUTPUT_NAMES, out, strict=True):
            parts[k].append(np.asarray(v, dtype=np.float32))
    return {k: np.concatenate(v) for k, v in parts.items()}


def export_graph(graph: DeployedGraph, frames: np.ndarray, path: str | Path, opset: int = OPSET) -> None:
    """Trace a deployed graph to ONNX with the bundle's stable names and a dynamic batch dimension."""
    dynamic = {INPUT_NAME: {0: "batch"}} | {k: {0: "batch"} for k in OUTPUT_NAMES}
    with warnings.catch_warnings():
        # Shapes other than the batch (image size, grid, passes, grid shifts) are constants of the
        # graph by design; the tracer's generic warnings about them are noise. Every export is
        # checked against PyTorch (export_onnx) before it counts.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(graph, (torch.from_numpy(frames[:2]),), str(path), input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic, opset_version=opset,
                          dynamo=False, do_constant_folding=True)


def _to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def export_onnx(model_path: str | Path, out: str | Path, precision: str = "fp32", max_batch: int = 32,
                opset: int = OPSET, int8_footage: str | Path | None = None) -> dict[str, Any]:
    """Export, check and describe a checkpoint's deployed graph. Returns the sidecar written beside
    ``out``. Raises ExportError when a check fails or ``out`` cannot be written; an earlier export at
    ``out`` is replaced only by one that passed every check.

    ``precision="int8"``: static int8 of the weight products (export/quantize.py), its activation
    ranges taken from frames of the normal footage in ``int8_footage`` (the training videos)."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"--precision {precision}: choose fp32, fp16 or int8")
    if (precision == "int8") != (int8_footage is not None):
        raise ExportError("--precision int8 takes its activation ranges from normal footage: name it with "
                          "--int8-footage DIR (the training videos), which only int8 uses")
    if opset < 17:
        raise ExportError("opset must be >= 17")
    from model.evaluation import scorer_from_meta

    net, meta = checkpoint.load(model_path)
    scorer = scorer_from_meta(net, meta)
    graph = DeployedGraph(net, scorer).eval()
    frames = golden_inputs(net.cfg.image_size, net.cfg.channels)
    with torch.no_grad():
        ref = dict(zip(OUTPUT_NAMES, (t.numpy() for t in graph(torch.from_numpy(frames))), strict=True))
    out = Path(out)
    int8_frames = None
    if int8_footage is not None:
        from export.quantize import calibration_windows

        int8_frames = calibration_windows(int8_footage, net.cfg.image_size, net.cfg.channels)

    def write(draft: Path) -> dict[str, Any]:
        sidecar = _describe(net, meta, scorer, precision, max_batch, opset, ref)
        sidecar["source_checkpoint_sha256"] = checkpoint.digest(checkpoint.resolve(model_path))
        if int8_frames is not None:
            sidecar["int8"] = {"mode": "static, weight products", "footage": str(int8_footage),
                               "windows": len(int8_frames)}
        _export_and_check(graph, sidecar, frames, ref, draft, out, precision, opset, int8_frames)
        sidecar_path(draft).write_text(json.dumps(sidecar, indent=1) + "\n")
        return sidecar

    return write_beside(out, write)  # a failed export leaves the one it would replace as it was


def _export_and_check(graph: DeployedGraph, sidecar: dict[str, Any], frames: np.ndarray, ref: dict[str, np.ndarray],
                      draft: Path, out: Path, precision: str, opset: int,
                      int8_frames: np.ndarray | None = None) -> None:
    """Export to ``draft`` with ``sidecar`` in its metadata, run its checks and record them in
    ``sidecar``; ``out`` is where it will go (for messages)."""
    import onnx

    fp32 = draft.with_name("fp32.onnx")
    export_graph(graph, frames, fp32, opset)
    if precision == "fp16":
        _to_fp16(fp32, draft)
    elif precision == "int8":
        from export.quantize import quantize_int8

        quantize_int8(fp32, draft, "static", calibration=int8_frames)
        fp32.unlink()
    else:
        fp32.replace(draft)
    model = onnx.load(str(draft))
    for key, value in (("aedmae.sidecar", json.dumps({k: v for k, v in sidecar.items() if k != "golden"})),
                       ("aedmae.version", sidecar["code_version"])):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(draft))
    try:
        onnx.checker.check_model(str(draft), full_check=True)
        got = run_onnxruntime(draft, frames)
        for b in (1, 3):  # dynamic batch: other batch sizes give the same per-frame results
            other = run_onnxruntime(draft, frames, batch=b)
            sidecar.setdefault("batch_parity", {})[str(b)] = compare_outputs(other, got, "fp32")
        parity = compare_outputs(got, ref, precision)
    except Exception as e:
        raise ExportError(f"{out}: the exported graph failed its checks: {e}") from e
    sidecar["parity_vs_pytorch"] = parity
    if not parity["ok"] or not all(v["ok"] for v in sidecar["batch_parity"].values()):
        raise ExportError(f"ONNX Runtime disagrees with PyTorch beyond tolerance: {json.dumps(parity)}")
    sidecar["golden"]["reference_onnxruntime"] = {k: v.tolist() for k, v in got.items()}
    sidecar["sha256"] = sha256(draft)


def _describe(net: AEDMAE, meta: dict[str, Any], scorer: Scorer, precision: str, max_batch: int, opset: int,
              ref: dict[str, np.ndarray]) -> dict[str, Any]:
    import onnxruntime

    from model.golden import GOLDEN_FRAMES, GOLDEN_SEED

    h, w = net.cfg.image_size
    g = net.cfg.scoring.context_gap  # the window the graph's three frames are taken from, and the look-ahead
    return {
        "format": SIDECAR_FORMAT,
        "code_version": checkpoint.code_version(),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source_checkpoint": meta.get("code_version"),
        "precision": precision,
        "opset": opset,
        "max_batch": max_batch,
        "model": meta["model"],
        **scorer.describe(),
        "io": {"input": INPUT_NAME, "input_shape": ["batch", 3, h, w, net.cfg.channels], "input_dtype": "uint8",
               "input_layout": f"frames t-{g}, t, t+{g} x rows x cols x channels (RGB or gray), model resolution",
               "outputs": list(OUTPUT_NAMES), "heatmap_grid": list(net.cfg.grid), "lookahead_frames": g},
        "golden": {"seed": GOLDEN_SEED, "frames": GOLDEN_FRAMES,
                   "reference": {k: v.tolist() for k, v in ref.items()}},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }
