"""Running a TensorRT engine: one execution context on its own CUDA stream, with pinned host buffers.

Device and pinned host memory come from torch's CUDA allocator (torch is in the GPU image; on a
CPU-only install this module is never imported). Create one runner per inference worker: each gets
its own execution context and stream, so workers overlap on one GPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from export.bundle import INPUT_NAME, OUTPUT_NAMES
from export.tensorrt_build import TensorRTUnavailable, import_tensorrt
from model.errors import CheckpointError


class TensorRTRunner:
    """uint8 frames (B, 3, H, W, C) -> the graph's outputs, for B in the engine's profile."""

    def __init__(self, engine_path: str | Path, device: int = 0, engine: Any = None) -> None:
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise TensorRTUnavailable("a TensorRT engine needs a CUDA GPU; none is visible")
        path = Path(engine_path)
        side = path.with_name(path.name + ".json")
        if not path.is_file() or not side.is_file():
            raise CheckpointError(f"{path}: engine or its sidecar {side.name} is missing")
        self.sidecar = json.loads(side.read_text())
        self.device = torch.device("cuda", device)
        if engine is None:
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise CheckpointError(f"{path}: TensorRT cannot load this engine (built for another GPU or version?)")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        prof = self.sidecar["engine"]["profile"]
        self.max_batch = int(prof["max_batch"])
        self.min_batch = int(prof["min_batch"])
        h, w = self.sidecar["model"]["image_size"]
        c = self.sidecar["model"]["channels"]
        gh, gw = self.sidecar["io"]["heatmap_grid"]
        shapes = {"score": (), "calibrated": (), "teacher_error": (), "discrepancy": (), "heatmap": (gh, gw)}
        b = self.max_batch
        self.host_in = torch.empty((b, 3, h, w, c), dtype=torch.uint8, pin_memory=True)
        self.dev_in = torch.empty((b, 3, h, w, c), dtype=torch.uint8, device=self.device)
        self.dev_out = {k: torch.empty((b, *s), dtype=torch.float32, device=self.device) for k, s in shapes.items()}
        self.host_out = {k: torch.empty((b, *s), dtype=torch.float32, pin_memory=True) for k, s in shapes.items()}

    def infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        b = len(frames)
        if not self.min_batch <= b <= self.max_batch:
            raise ValueError(f"batch {b} outside the engine's profile [{self.min_batch}, {self.max_batch}]")
        self.host_in[:b].copy_(torch.from_numpy(np.ascontiguousarray(frames)))
        with torch.cuda.stream(self.stream):
            self.dev_in[:b].copy_(self.host_in[:b], non_blocking=True)
            self.context.set_input_shape(INPUT_NAME, tuple(self.dev_in[:b].shape))
            self.context.set_tensor_address(INPUT_NAME, self.dev_in.data_ptr())
            for name in OUTPUT_NAMES:
                self.context.set_tensor_address(name, self.dev_out[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            for name in OUTPUT_NAMES:
                self.host_out[name][:b].copy_(self.dev_out[name][:b], non_blocking=True)
        self.stream.synchronize()
        return {k: self.host_out[k][:b].numpy().copy() for k in OUTPUT_NAMES}
