"""int8 versions of an exported graph for ONNX Runtime on CPUs.

Static int8 is an export precision (``aedmae export onnx --precision int8 --int8-footage DIR``) and
what ``benchmarks/bench_model.py`` times; ``benchmarks/onnx_auc.py`` and ``benchmarks/int8_study.py``
measure both modes for Ped2 AUC and speed.
  * dynamic: MatMul/Gemm weights in int8, activations quantised on the fly per call (ONNX Runtime
    fuses them into DynamicQuantizeMatMul). The attention products (activation x activation) stay fp32.
    One activation scale per call makes a frame's score depend on the frames batched with it.
  * static: QDQ with activation ranges calibrated on real frames, so a frame scores the same in any
    batch. By default only the weight products run in int8 and attention stays fp32, which ONNX
    Runtime then fuses into its MultiHeadAttention kernel: on the AVX-512 VNNI CPU of
    benchmarks/RESULTS.md that is 1.27-1.40x fp32, while quantising the attention products too
    (``attention_products=True``) is 1.11-1.22x: ONNX Runtime's int8 products of two activations are
    slower there than its fp32 fused attention. The other two choices, int8 outputs of the weight
    products (``int8_product_outputs``) and int8 convolutions (``convolutions``), were slower too
    (``int8_study.py`` times all four).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from export.bundle import INPUT_NAME
from model.errors import AedmaeError

Int8Mode = Literal["dynamic", "static"]


def quantize_int8(src: str | Path, dst: str | Path, mode: Int8Mode = "dynamic",
                  calibration: np.ndarray | None = None, batch: int = 1, attention_products: bool = False,
                  int8_product_outputs: bool = False, convolutions: bool = False) -> Path:
    """Write the int8 version of the ONNX graph ``src`` to ``dst``.

    ``calibration``: (N, 3, H, W, C) uint8 model inputs, real frames, needed by ``static``; run ``batch``
    at a time. The ranges are minima and maxima over all of them whatever the batch, but the run keeps
    every intermediate tensor of a batch: the shipped model peaks at 1.8 GB with batch 1, 13 GB with 8.
    Static only, each False in the export and kept for ``benchmarks/int8_study.py``:
    ``attention_products`` quantises the MatMuls of two computed operands as well;
    ``int8_product_outputs`` requantises the products' outputs to int8 (a QuantizeLinear after each)
    instead of handing fp32 to the bias Add that follows; ``convolutions`` quantises the Convs too
    (patch embedding, the attention blocks' q/k/v projections), their outputs int8 so that ONNX
    Runtime can fuse them into QLinearConv.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    dst = Path(dst)
    if mode == "dynamic":
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        return dst
    if calibration is None or len(calibration) == 0:
        raise AedmaeError("static int8 quantisation needs calibration frames")
    frames: np.ndarray = calibration
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(frames[i : i + batch] for i in range(0, len(frames), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {INPUT_NAME: x}

    prepared = dst.with_suffix(".prepared.onnx")
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    try:
        excluded = [] if attention_products else activation_products(prepared)
        # by default products hand fp32 to the bias Add that follows them (MatMulIntegerToFloat)
        # instead of int8 to a DequantizeLinear, which is faster (int8_study.py; RESULTS.md, "int8 that
        # a frame's batch does not change")
        fp32_outputs = [] if int8_product_outputs else ["MatMul"]
        quantize_static(str(prepared), str(dst), Batches(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm", *(["Conv"] if convolutions else [])],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                        extra_options={"OpTypesToExcludeOutputQuantization": fp32_outputs})
    finally:
        prepared.unlink(missing_ok=True)
    return dst


def activation_products(path: str | Path) -> list[str]:
    """Names of the MatMul nodes of ``path`` whose operands are both computed (attention's q.k and
    weights.v), as opposed to products with a weight (an initializer or a Constant)."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def calibration_windows(folder: str | Path, size: tuple[int, int], channels: int, count: int = 64) -> np.ndarray:
    """``count`` model inputs (N, 3, H, W, C) uint8 from frames spread over the videos in ``folder``
    (training footage: the normal frames static int8 takes its activation ranges from)."""
    from model.frames import FrameCache, default_cache_dir, discover
    from model.window import clip_windows

    sources = discover(folder)
    cache = FrameCache(default_cache_dir())
    rng = np.random.default_rng(0)
    per_video = max(1, count // len(sources))
    windows = []
    for src in sources:
        frames = cache.load(src, size, channels)
        windows.append(clip_windows(frames, rng.choice(len(frames), min(per_video, len(frames)), replace=False)))
    return np.concatenate(windows)[:count]
