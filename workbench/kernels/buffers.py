"""Output buffers for large recordings on CPU: mappings that fault in cheaply, kept and reused once freed.

A recording writes each byte of its cache once, into memory it has just allocated. On Linux every
fresh 4 KiB page costs a page fault on first write, and that first touch can dominate writing the
output; memory advised as huge pages (MADV_HUGEPAGE: one fault per 2 MiB) or reused is much cheaper
to fill. Huge pages are not always cheap either: with THP `defrag = madvise` (a common default) the
kernel compacts memory on the faulting thread, which makes very large fresh buffers slow to fill.
(Timings: benchmarks/cpu_results.md, "Choices measured".)

So `recording_buffer` hands out anonymous mappings for CPU outputs of at least HUGE_PAGE_MIN_BYTES:
advised as huge pages up to HUGE_PAGE_MAX_BYTES, and above that populated up front with
MADV_POPULATE_WRITE, in address order (the S6 scan writes its states in a scattered order, and
faulting them there is slower). When the last tensor viewing a buffer is freed the mapping goes to a pool
instead of back to the OS; the next recording of a similar size reuses it, already faulted in
(what a caching allocator does; researchers re-run the same analysis many times). The pool holds at
most `pool_limit_bytes()` (a quarter of physical memory, at most 8 GiB; WORKBENCH_BUFFER_POOL_MB
sets it, 0 turns pooling off), evicting the oldest mappings first, and `release_recording_buffers()`
returns everything pooled to the OS. Anything else (other devices, small outputs, no madvise, THP
"never") falls back to `torch.empty`.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
import weakref
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "HUGE_PAGE_MIN_BYTES",
    "POOL_ENV",
    "buffered_linear",
    "pool_limit_bytes",
    "pooled_bytes",
    "recording_buffer",
    "release_recording_buffers",
]

HUGE_PAGE_MIN_BYTES = 8 << 20  # below this the fault savings are small next to the mmap call
# Above this, huge pages are not advised: finding hundreds of free 2 MiB pages can stall the faulting
# thread in memory compaction (THP defrag=madvise); such mappings are populated instead (below).
HUGE_PAGE_MAX_BYTES = 64 << 20
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux >= 5.14
# Successive mappings start their data 0, 320, 640, ... bytes in (64-byte steps, cycling below 4 KiB).
# Equal-sized buffers mapped back to back are otherwise exactly a power of two apart, and a kernel
# streaming several of them hits the same cache sets: the minGRU gates + scan at 3 x 256 MiB ran at
# 1.42 ns/element with buffers 2^28 apart against 0.64-0.80 ns/element without (cpu_results.md, D).
STAGGER, STAGGER_STEPS = 64, 64
POOL_ENV = "WORKBENCH_BUFFER_POOL_MB"
MAX_DEFAULT_POOL = 8 << 30
_HUGE_PAGES = hasattr(mmap, "MADV_HUGEPAGE") and hasattr(mmap.mmap, "madvise")



class _Mapping(NamedTuple):
    """An anonymous mapping and where a buffer's data starts in it."""

    memory: mmap.mmap
    offset: int

    @property
    def usable(self) -> int:
        return len(self.memory) - self.offset


_lock = threading.RLock()  # RLock: a finalizer may run on this thread while it holds the lock
_pool: list[_Mapping] = []  # freed mappings, oldest first
_mappings_made = 0


def pool_limit_bytes() -> int:
    """Bytes of freed mappings the pool may keep: WORKBENCH_BUFFER_POOL_MB if set, else a quarter of
    physical memory, at most 8 GiB."""
    configured = os.environ.get(POOL_ENV)
    if configured is not None:
        try:
            return max(0, int(float(configured) * (1 << 20)))
        except ValueError:
            raise ValueError(f"{POOL_ENV} must be a number of MiB, got {configured!r}") from None
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
    return min(physical // 4, MAX_DEFAULT_POOL)


def pooled_bytes() -> int:
    """Bytes of freed mappings held for reuse right now."""
    with _lock:
        return sum(len(m.memory) for m in _pool)


def release_recording_buffers() -> int:
    """Return every pooled mapping to the OS; returns the bytes released."""
    with _lock:
        released = sum(len(m.memory) for m in _pool)
        _pool.clear()  # nothing else references a pooled mapping: each unmaps as it is freed here
    return released


def _take(nbytes: int) -> _Mapping | None:
    """The smallest pooled mapping holding at least nbytes and at most twice that, removed from the pool."""
    with _lock:
        fitting = [m for m in _pool if nbytes <= m.usable <= 2 * nbytes]
        if not fitting:
            return None
        best = min(fitting, key=lambda m: m.usable)
        _pool.remove(best)
        return best


def _give_back(mapping: _Mapping) -> None:
    """Finalizer of a buffer's array: pool its mapping, dropping the oldest beyond the limit. Dropped
    mappings are not closed here (the dying array still exports them); they unmap when freed."""
    try:
        limit = pool_limit_bytes()
    except ValueError:  # a bad setting is reported where it is read by the caller, not in a finalizer
        limit = 0
    with _lock:
        if len(mapping.memory) <= limit:
            _pool.append(mapping)
        total = sum(len(m.memory) for m in _pool)
        while total > limit:
            total -= len(_pool.pop(0).memory)


def _new_mapping(nbytes: int) -> _Mapping | None:
    """A fresh huge-page-advised mapping for nbytes, its data starting at the next stagger offset."""
    global _mappings_made
    with _lock:
        offset = STAGGER * ((_mappings_made * 5) % STAGGER_STEPS)  # 5 is coprime to the step count
        _mappings_made += 1
    try:
        memory = mmap.mmap(-1, offset + nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError):
        return None
    try:
        if nbytes <= HUGE_PAGE_MAX_BYTES:
            memory.madvise(mmap.MADV_HUGEPAGE)
        else:  # fault every page in now, in address order, rather than in the kernel's scattered order
            memory.madvise(MADV_POPULATE_WRITE)
    except (OSError, ValueError):  # an older kernel without the advice: pages fault on first write
        pass
    return _Mapping(memory, offset)


def recording_buffer(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """An uninitialised contiguous tensor of `shape`: on CPU and large, a (possibly reused) huge-page
    mapping that returns to the pool when the last tensor viewing it is freed; else `torch.empty`."""
    device = torch.device(device)
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = numel * itemsize
    if device.type != "cpu" or not _HUGE_PAGES or nbytes < HUGE_PAGE_MIN_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    mapping = _take(nbytes) or _new_mapping(nbytes)
    if mapping is None:
        return torch.empty(shape, dtype=dtype, device=device)
    # the storage keeps this array alive; the finalizer runs once no tensor views the memory any more
    array = np.frombuffer(mapping.memory, dtype=np.uint8, count=nbytes, offset=mapping.offset)
    weakref.finalize(array, _give_back, mapping)
    return torch.from_numpy(array).view(dtype).view(shape)


def buffered_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias) written into a `recording_buffer` (no autograd): for the large
    activations a no-grad CPU recording allocates on every call. The same GEMM; the BLAS may round
    the last bit differently for differently aligned outputs. x: [..., d_in]."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        raise RuntimeError("buffered_linear has no autograd; use F.linear when a gradient is needed")
    if x.device.type != "cpu" or x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        return F.linear(x, weight, bias)
    out = recording_buffer((*x.shape[:-1], weight.shape[0]), x.dtype, x.device)  # [..., d_out]
    if out.numel() == 0:
        return F.linear(x, weight, bias)
    flat_out = out.view(-1, weight.shape[0])  # [rows, d_out]
    flat_x = x.reshape(-1, x.shape[-1])  # [rows, d_in]
    if bias is None:
        torch.mm(flat_x, weight.t(), out=flat_out)
    else:
        torch.addmm(bias, flat_x, weight.t(), out=flat_out)
    return out
