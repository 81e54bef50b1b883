"""The allocator setting the aedmae command makes (model/cpu.py): freed memory is reused, not
faulted in again."""

import ctypes
import ctypes.util
import resource
import sys
from pathlib import Path

import pytest

from model.cpu import reuse_freed_memory

SIZE = 64 << 20  # above glibc's largest mmap threshold (32 MiB): without the setting, mapped afresh each time


def _faults_of_a_large_temporary(libc: ctypes.CDLL) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_a_large_temporary_reuses_freed_memory_instead_of_faulting_it_in_again():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    assert reuse_freed_memory()
    _faults_of_a_large_temporary(libc)  # the first one grows the heap
    faults = min(_faults_of_a_large_temporary(libc) for _ in range(3))
    assert faults < 1024, f"{faults} page faults: 64 MiB mapped afresh is 16,384 (4 KiB pages)"


def test_int8_dot_products_read_from_the_cpu_flags():
    from model.cpu import int8_dot_products

    line = "flags\t\t: fpu sse2 avx2 fma {}\n"
    assert int8_dot_products("processor\t: 0\n" + line.format("avx512f avx512_vnni")) is True
    assert int8_dot_products(line.format("avx_vnni")) is True  # Alder Lake and later: VNNI without AVX-512
    assert int8_dot_products(line.format("amx_tile amx_int8")) is True
    assert int8_dot_products(line.format("avx512f avx512_vnnix")) is False  # whole flags only
    assert int8_dot_products(line.format("")) is False
    assert int8_dot_products("processor\t: 0\n") is None  # no flags to read: cannot tell
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # by default it reads this machine's own flags
        assert int8_dot_products() == int8_dot_products(cpuinfo.read_text())
    else:
        assert int8_dot_products() is None
