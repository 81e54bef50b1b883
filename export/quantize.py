"""int8 versions of an exported graph for ONNX Runtime on CPUs.

int8 is a studied option, not an export precision: the benchmarks measure its speed and its Ped2 AUC
(``benchmarks/bench_model.py``, ``benchmarks/onnx_auc.py``, ``benchmarks/int8_study.py``).
  * dynamic: MatMul/Gemm weights in int8, activations quantised on the fly per call (ONNX Runtime
    fuses them into DynamicQuantizeMatMul). The attention products (activation x activation) stay fp32.
  * static: QDQ with activation ranges calibrated on real frames; every MatMul, the attention
    products included, runs in int8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from export.bundle import INPUT_NAME
from model.errors import AedmaeError

Int8Mode = Literal["dynamic", "static"]


def quantize_int8(src: str | Path, dst: str | Path, mode: Int8Mode = "dynamic",
                  calibration: np.ndarray | None = None, batch: int = 8) -> Path:
    """Write the int8 version of the ONNX graph ``src`` to ``dst``.

    ``calibration``: (N, 3, H, W, C) uint8 model inputs, real frames, needed by ``static``.
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
        quantize_static(str(prepared), str(dst), Batches(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm"], activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    return dst
