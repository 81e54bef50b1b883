"""Inference backends: uint8 frame batches in, the graph's outputs out. One instance per worker
(its own ONNX Runtime session / TensorRT execution context / CUDA stream). Backends know nothing
about queues or HTTP. GPU libraries are imported lazily, only by the backend that needs them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from export.bundle import INPUT_NAME, OUTPUT_NAMES, Bundle
from export.ort_fusion import ort_session
from model.errors import ConfigError
from service.settings import Settings

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str
    max_batch: int

    def infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """(B, 3, H, W, C) uint8 -> {output name: (B, ...) float32}."""
        ...


class OnnxRuntimeBackend:
    """ONNX Runtime: the CPU provider, or CUDA / TensorRT providers when onnxruntime-gpu has them."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, settings: Settings) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers: list[Any] = ["CPUExecutionProvider"]
        if settings.device.startswith("cuda"):
            device_id = int(settings.device.partition(":")[2] or 0)
            if "CUDAExecutionProvider" not in available:
                raise ConfigError(f"device={settings.device}: this onnxruntime has no CUDA provider "
                                  f"(available: {', '.join(available)}); install onnxruntime-gpu or use device=cpu")
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
            if "TensorrtExecutionProvider" in available:
                providers.insert(0, ("TensorrtExecutionProvider", {"device_id": device_id}))
        self.session = ort_session(bundle.graph, settings.intra_op_threads(), providers)
        self.providers = self.session.get_providers()
        self.max_batch = settings.max_batch_size

    def infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        out = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(frames)})
        return dict(zip(OUTPUT_NAMES, out, strict=True))


class TensorRTBackend:
    """A TensorRT engine: one execution context on its own CUDA stream, pinned host buffers."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, settings: Settings) -> None:
        from export.tensorrt_runtime import TensorRTRunner

        device = int(settings.device.partition(":")[2] or 0)
        self.runner = TensorRTRunner(bundle.graph, device)
        self.max_batch = min(settings.max_batch_size, self.runner.max_batch)

    def infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        return self.runner.infer(frames)


class TorchBackend:
    """PyTorch eager on CPU or CUDA from the bundle's checkpoint; on CUDA optionally fp16/bf16 and
    CUDA graphs captured per batch size (batches are padded up to the next captured size); on CPUs
    that multiply bf16 in hardware (AVX512-BF16, AMX) optionally bf16 (1.1-1.2x ONNX Runtime fp32 on
    the shipped model there: benchmarks/RESULTS.md, "bf16 on the CPU")."""

    name = "torch"

    def __init__(self, bundle: Bundle, settings: Settings) -> None:
        import torch

        from export.onnx_export import DeployedGraph
        from model import checkpoint
        from model.evaluation import scorer_from_meta

        net, meta = checkpoint.load(bundle.graph.parent)
        self.device = torch.device(settings.device)
        self.graph = DeployedGraph(net, scorer_from_meta(net, meta)).eval().to(self.device)
        self.dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[settings.precision]
        if self.device.type != "cuda" and self.dtype is not None:
            from model.cpu import native_cpu_bf16

            if self.dtype is torch.float16 or not native_cpu_bf16():
                raise ConfigError(f"precision={settings.precision} for the torch backend needs device=cuda "
                                  "(bf16 also runs on CPUs with native bf16, AVX512-BF16 or AMX; this one has none)")
        if self.device.type == "cpu":
            from model.cpu import reuse_freed_memory

            reuse_freed_memory()  # 1.2-1.8x on the shipped model: no page faults on every call (model/cpu.py)
        if self.device.type == "cuda" and self.dtype is None:
            # fp32 means IEEE fp32 (parity with ONNX Runtime within 1e-4): no TF32 in cuDNN or matmuls.
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        self.max_batch = settings.max_batch_size
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.use_graphs = settings.cuda_graphs and self.stream is not None
        self.graphs: dict[int, tuple[Any, Any, tuple[Any, ...]]] = {}

    def _run(self, x: Any) -> tuple[Any, ...]:
        import torch

        # No autocast weight cache: under CUDA graph capture it would hold casts made in the graph's
        # private memory pool and freed at the context's exit (PyTorch's CUDA graphs notes).
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None, cache_enabled=False):
            return tuple(t.float() for t in self.graph(x))

    def _capture(self, size: int, shape: tuple[int, ...]) -> tuple[Any, Any, tuple[Any, ...]]:
        import torch

        static_in = torch.zeros((size, *shape), dtype=torch.uint8, device=self.device)
        with torch.cuda.stream(self.stream):  # warm up on the side stream before capture
            for _ in range(2):
                self._run(static_in)
        graph = torch.cuda.CUDAGraph()
        # The runtime captures every size at warm-up, one worker after another; thread_local keeps a
        # later capture from failing other workers' copies (in "global" mode they raise mid-capture).
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            static_out = self._run(static_in)
        return graph, static_in, static_out

    def infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        b = len(frames)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(frames))
            if not self.use_graphs:
                if self.stream is None:
                    outs = self._run(x)
                else:
                    with torch.cuda.stream(self.stream):
                        outs = self._run(x.to(self.device, non_blocking=True))
                    self.stream.synchronize()
                return {k: v[:b].cpu().numpy() for k, v in zip(OUTPUT_NAMES, outs, strict=True)}
            size = 1 << (b - 1).bit_length()  # next power of two
            if size not in self.graphs:
                self.graphs[size] = self._capture(size, tuple(frames.shape[1:]))
            graph, static_in, static_out = self.graphs[size]
            assert self.stream is not None  # CUDA graphs imply CUDA
            with torch.cuda.stream(self.stream):
                static_in[:b].copy_(x, non_blocking=True)
                graph.replay()
                result = {k: v[:b].to("cpu", non_blocking=True) for k, v in zip(OUTPUT_NAMES, static_out, strict=True)}
            self.stream.synchronize()
            return {k: v.numpy() for k, v in result.items()}


BACKENDS: dict[str, type] = {"onnxruntime": OnnxRuntimeBackend, "tensorrt": TensorRTBackend, "torch": TorchBackend}


def resolve_backend(settings: Settings, bundle_path: Path) -> str:
    """The backend ``auto`` stands for here: TensorRT for an engine, torch on CUDA without
    onnxruntime-gpu, ONNX Runtime otherwise."""
    if settings.backend != "auto":
        return settings.backend
    if bundle_path.suffix == ".engine":
        return "tensorrt"
    if settings.device.startswith("cuda"):
        import onnxruntime as ort

        return "onnxruntime" if "CUDAExecutionProvider" in ort.get_available_providers() else "torch"
    return "onnxruntime"


def check_backend(name: str, bundle: Bundle, settings: Settings) -> None:
    """The choices that rule a backend out, found before anything loads (``aedmae serve`` checks them
    before it starts, so they end the command in one line instead of leaving a server never ready)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}")
    if settings.precision != "fp32" and name != "torch":
        raise ConfigError(f"precision={settings.precision} is the torch backend's autocast; the {name} "
                          f"backend runs the model file's own precision ({bundle.precision}): for fp16 there, "
                          "export one with `aedmae export onnx --precision fp16`")
    if name == "tensorrt":
        if bundle.graph.suffix != ".engine":
            raise ConfigError(f"backend tensorrt runs a TensorRT engine; {bundle.graph} is not one: build it with "
                              "`aedmae export tensorrt`, or serve the ONNX graph with --backend onnxruntime")
        from export.tensorrt_build import import_tensorrt

        import_tensorrt()


def create_backend(name: str, bundle: Bundle, settings: Settings) -> Backend:
    check_backend(name, bundle, settings)
    backend: Backend = BACKENDS[name](bundle, settings)
    return backend
