"""ONNX -> TensorRT engine, written for TensorRT 11 (and 10.x with the STRONGLY_TYPED flag).

TensorRT 11 networks are strongly typed: precision comes from the ONNX graph (export with
``--precision fp16`` for an fp16 engine; the FP16/INT8 builder flags no longer exist). The builder
gets one optimisation profile over the batch dimension and a timing cache that later builds reuse.
TensorRT is imported lazily: everything here but :func:`build_engine` works without it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from export.bundle import INPUT_NAME, load_bundle, sha256
from model.errors import AedmaeError

log = logging.getLogger(__name__)


class TensorRTUnavailable(AedmaeError):
    """TensorRT (or a CUDA GPU) is not available here."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a clear error saying how to get it."""
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTUnavailable(
            "TensorRT is not installed: install it on a machine with an NVIDIA GPU (`pip install tensorrt`, "
            "or use docker/Dockerfile.gpu), then run `aedmae export tensorrt` there; engines are specific to "
            f"the GPU and TensorRT version that build them ({e})"
        ) from None
    return tensorrt


@dataclass(frozen=True)
class BatchProfile:
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32

    def validate(self) -> BatchProfile:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise AedmaeError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self}")
        return self

    def shapes(self, frame_shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) input shapes for ``frames`` of per-sample shape ``frame_shape``."""
        return tuple((b, *frame_shape) for b in (self.min_batch, self.opt_batch, self.max_batch))


def engine_sidecar(onnx_sidecar: dict[str, Any], onnx_path: Path, profile: BatchProfile, trt_version: str,
                   cuda: dict[str, Any], workspace_mb: int, build_seconds: float) -> dict[str, Any]:
    """The engine's JSON sidecar: the ONNX sidecar plus what the engine is bound to."""
    h, w = onnx_sidecar["model"]["image_size"]
    c = onnx_sidecar["model"]["channels"]
    shapes = profile.shapes((3, h, w, c))
    return onnx_sidecar | {
        "engine": {
            "source_onnx": onnx_path.name, "source_onnx_sha256": sha256(onnx_path),
            "profile": asdict(profile), "input_shapes": {"min": shapes[0], "opt": shapes[1], "max": shapes[2]},
            "precision": onnx_sidecar["precision"], "tensorrt_version": trt_version, "cuda": cuda,
            "workspace_mb": workspace_mb, "build_seconds": round(build_seconds, 1),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    }


def build_engine(onnx_path: str | Path, out: str | Path, profile: BatchProfile, workspace_mb: int = 2048,
                 timing_cache: str | Path | None = None) -> dict[str, Any]:
    """Build, save and check an engine; returns its sidecar (written beside ``out``)."""
    trt = import_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("building a TensorRT engine needs a CUDA GPU; none is visible")
    profile.validate()
    bundle = load_bundle(onnx_path)
    out = Path(out)
    cache_path = Path(timing_cache) if timing_cache else out.with_suffix(".timing.cache")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # ignored (always on) in TensorRT 11
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(bundle.graph.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise AedmaeError(f"{bundle.graph}: TensorRT cannot parse this ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    h, w = bundle.image_size
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(INPUT_NAME, *profile.shapes((3, h, w, bundle.channels)))
    config.add_optimization_profile(opt_profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise AedmaeError("TensorRT failed to build the engine (see the TensorRT log above)")
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    cuda = {"device": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
            "torch_cuda": torch.version.cuda}
    sidecar = engine_sidecar(bundle.sidecar, bundle.graph, profile, trt.__version__, cuda, workspace_mb, seconds)
    sidecar["sha256"] = sha256(out)
    (out.with_name(out.name + ".json")).write_text(json.dumps(sidecar, indent=1) + "\n")
    log.info("built %s in %.1f s (TensorRT %s, %s)", out, seconds, trt.__version__, cuda["device"])
    return sidecar
