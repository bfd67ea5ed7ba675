"""The allocator setting reaches glibc, and large freed blocks stay in the process afterwards."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

from attnsim.model.allocator import keep_freed_memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_thresholds_keep_a_freed_large_block_in_the_heap():
    class MallInfo2(ctypes.Structure):  # glibc >= 2.33
        names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
        _fields_ = [(name, ctypes.c_size_t) for name in names]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
    size = 64 << 20  # far above glibc's default mmap threshold (128 KiB, at most 32 MiB)
    block = libc.malloc(size)
    assert block
    assert libc.mallinfo2().hblkhd < size, "a 64 MiB block was still served by mmap"
    libc.free(block)
    assert libc.mallinfo2().fordblks >= size, "the freed block went back to the system"
