"""What the CPU paths need to know and set about the machine: whether it multiplies bf16 in hardware,
whether it has int8 dot-product instructions (:func:`int8_dot_products`), and malloc's reuse of
freed memory (:func:`reuse_freed_memory`).

Freed memory: glibc serves every allocation above its mmap threshold (which adapts, up to 32 MiB on
64-bit) with a fresh ``mmap`` and unmaps it on ``free``, so a model whose activations are larger than
that pays for its memory again on every call: page faults, and the kernel zeroing each page. With the
shipped model's four-grid graph at batch 16 a forward pass took 2 million minor page faults and ran at
3.0-3.2 frames/s instead of 5.0-5.4 (batch 8: 300,000 faults, 4.0-4.3 instead of 5.3-5.4;
benchmarks/page_faults.py, RESULTS.md "Page faults"). Telling malloc not to use mmap and to keep up to
``trim_threshold`` bytes of freed heap makes later calls reuse the same pages. ONNX Runtime has its
own arena and does not need this; the price is that the process keeps its peak heap (the torch
paths' working set) instead of returning it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_MAX = -4
_applied: bool | None = None


def reuse_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Make malloc keep freed blocks for reuse (process-wide, once). False where it cannot (not glibc)."""
    global _applied
    if _applied is None:
        _applied = False
        name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
        if name:
            try:
                mallopt = ctypes.CDLL(name).mallopt
            except (OSError, AttributeError):  # a libc without mallopt (musl)
                mallopt = None
            if mallopt is not None:
                _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
        log.debug("malloc keeps freed memory for reuse: %s", _applied)
    return _applied


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where bf16 steps are faster."""
    import torch  # here: the serving path imports this module and needs no torch for ONNX Runtime

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own checks
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo names


def int8_dot_products(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU has int8 dot-product instructions (VNNI or AMX), which int8 models need to run
    faster than fp32 (on an AVX2 CPU without them dynamic int8 ran at 1.0x: benchmarks/RESULTS.md).
    None where it cannot tell (no /proc/cpuinfo). ``cpuinfo``: that file's text, for tests."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return any(flag in flags for flag in INT8_DOT_FLAGS) if flags else None
