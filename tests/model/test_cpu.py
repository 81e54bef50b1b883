"""The allocator setting the aedmae command makes (model/cpu.py): freed memory is reused, not
faulted in again."""

import ctypes
import ctypes.util
import resource
import sys

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
