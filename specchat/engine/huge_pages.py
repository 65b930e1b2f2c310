"""Block weights moved into 2 MB pages, where the system gives them (Linux's
transparent huge pages).

Why: a CPU step streams every weight once (~100 MB for the embedded target) and is
bound by how fast memory delivers it. In 4 KB pages that stream crosses a page
every 4 KB, and the hardware prefetchers stop at each boundary; in 2 MB pages they
run on. Measured on a 2-core Zen 5 EPYC (THP in `madvise` mode, as most distributions
ship it), alternating the same tensors between the two kinds of memory in one
process: a plain step 2.34 -> 2.26 ms and 2.71 -> 2.55 ms in two runs, a two-token
verify pass 2.58 -> 2.52 and 2.97 -> 2.85. Where THP is `always` the weights may have
them already; where it is off, or elsewhere than Linux, nothing changes.

`into_huge_pages` copies the tensors into one 2 MB-aligned buffer that asked for
huge pages before it was touched, and points each tensor at its part of it
(`Tensor.set_`), so whoever holds them (a layer, a list of a fused operator's
arguments) reads the new memory. Same bytes, same results.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache

import torch

HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # linux/mman.h
_ALIGN = 64  # each tensor's start, as torch's CPU allocator aligns them


@lru_cache(maxsize=1)
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def into_huge_pages(tensors: list[torch.Tensor]) -> bool:
    """Move contiguous CPU `tensors` (distinct, not views of one another) into memory
    backed by huge pages; False, and nothing moved, where the system does not offer
    them."""
    madvise = _madvise()
    tensors = [t for t in tensors if t.device.type == "cpu" and t.is_contiguous() and t.numel()]
    if madvise is None or not tensors:
        return False
    sizes = [t.numel() * t.element_size() for t in tensors]
    span = sum(-(-size // _ALIGN) * _ALIGN for size in sizes)
    # Untouched until copied into: glibc maps a buffer this size afresh, so its pages
    # are faulted in after the advice, as huge pages.
    raw = torch.empty(span + HUGE_PAGE, dtype=torch.uint8)
    offset = -raw.data_ptr() % HUGE_PAGE
    length = -(-span // HUGE_PAGE) * HUGE_PAGE
    if madvise(raw.data_ptr() + offset, min(length, raw.numel() - offset) // 4096 * 4096, _MADV_HUGEPAGE) != 0:
        return False
    storage = raw.untyped_storage()
    for tensor, size in zip(tensors, sizes):
        part = raw[offset:offset + size]
        part.copy_(tensor.reshape(-1).view(torch.uint8))
        tensor.set_(storage, offset // tensor.element_size(), tensor.shape, tensor.stride())
        offset += -(-size // _ALIGN) * _ALIGN
    return True
