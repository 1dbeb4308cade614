"""The process's heap, set up for dreaming: freed blocks stay mapped, and the KV caches sit on huge pages.

Why. A dream step allocates the same large buffers every step (the prefill's activations, up to 33 MB each
for the default model at N = 8) and frees them at its end. glibc serves blocks above its mmap threshold
(dynamic, at most 32 MiB) as fresh mappings and unmaps them on free, so every step faulted its pages in
again: ~20,000 minor faults a step at N = 8 (default model) and ~75,000 at N = 64 (take_cover), where the
kernel took ~15 % of a step's CPU time. And the KV caches, which every decode pass streams whole, sat on
4 KiB pages. With this module both go: compiled exact steps with frames decoded ran 1.09× faster for the default
model at N = 8 and 1.21× for take_cover at N = 64 (benchmarks/RESULTS.md, "Page faults").

What it changes, once per process, when the first engine on a CPU is built (:func:`keep_freed_memory`):
glibc's ``M_MMAP_MAX`` 0 (large blocks come from the heap, not from mmap) and ``M_TRIM_THRESHOLD`` its
maximum (the heap is not shrunk when its top is freed). The process thus keeps the memory of its largest
step mapped, memory it uses again the next step; ``malloc_trim`` (:func:`release_free_memory`) still hands
free pages back, as the dream server's worker does when it drops an engine. And the heap's next GiB is
advised onto transparent huge pages (:func:`_advise_heap`), as glibc does itself for every allocation when a
process starts with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``: a step's activations then sit on 2 MiB pages
too, 1.01-1.13× more speed for 6-19 % more resident memory (pages are whole 2 MiB). Set ``WHAM_GYM_MALLOC=0`` before
the first engine is built to leave glibc's defaults alone. Elsewhere than Linux with glibc, nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_MADV_HUGEPAGE = 14  # linux/mman.h
_HUGE_PAGE = 2 << 20  # x86-64 and arm64 transparent huge pages


def _load_libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    if not all(hasattr(libc, f) for f in ("mallopt", "malloc_trim", "madvise")):
        return None
    libc.malloc.restype = ctypes.c_void_p  # an address, not C's default int
    return libc


_LIBC = _load_libc()  # glibc on Linux; None elsewhere (musl has no mallopt)
_kept: bool | None = None  # keep_freed_memory's answer, once asked


def _enabled() -> bool:
    return _LIBC is not None and os.environ.get("WHAM_GYM_MALLOC", "1") != "0"


def keep_freed_memory() -> bool:
    """Keep freed blocks in the heap (see the module docstring); True where it is in effect.

    Idempotent and cheap after the first call. ``WHAM_GYM_MALLOC=0`` turns it off."""
    global _kept
    if _kept is None:
        _kept = (_enabled() and _LIBC.mallopt(_M_MMAP_MAX, 0) == 1
                 and _LIBC.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1)
        if _kept:
            _advise_heap(_HEAP_ADVISED)
    return _kept


_HEAP_ADVISED = 1 << 30  # address space only: no page of it is touched until the heap hands it out


def _advise_heap(size: int) -> None:
    """Advise the next ``size`` bytes of the heap onto huge pages, the one way a running process can.

    With mmap off and trimming off (above), a block this large is carved from the top of the heap, which grows
    by that much address space; the advice is given before any of it is touched, and freeing the block hands
    it back to the heap's top, still advised, where later allocations come from. Where glibc serves it
    otherwise (a thread's arena, a failed ``brk``: an mmap, unmapped on free), nothing is lost but the advice.
    """
    block = _LIBC.malloc(ctypes.c_size_t(size))
    if not block:
        return
    _advise_huge_pages(block, size)
    _LIBC.free(ctypes.c_void_p(block))


def _advise_huge_pages(start: int, nbytes: int) -> None:
    """MADV_HUGEPAGE over the whole 2 MiB pages inside [start, start + nbytes); the ends stay on small pages.
    A refusal (THP compiled out, an old kernel) only leaves small pages."""
    lo = -(-start // _HUGE_PAGE) * _HUGE_PAGE
    hi = (start + nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if hi > lo:
        _LIBC.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_HUGEPAGE)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def hugepage_zeros(shape, dtype, device) -> torch.Tensor:
    """``torch.zeros``, on transparent huge pages where the OS offers them (CPU tensors on Linux).

    The advice is given before the pages are first touched (zeroed), so they fault in as 2 MiB pages where
    the kernel has them free; the ends of the block that do not fill a whole huge page stay on small pages.
    """
    t = torch.empty(shape, dtype=dtype, device=device)
    if t.device.type == "cpu" and _enabled():
        _advise_huge_pages(t.data_ptr(), t.numel() * t.element_size())
    return t.zero_()
