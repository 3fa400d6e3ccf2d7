"""How many CPU threads torch uses, set for one block and restored after it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` CPU threads (None: leave torch's setting), restoring it afterwards.

    On a small shared machine one thread is often much faster for small models: OpenMP threads
    spin-wait for each other when another process holds the other cores.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        if threads <= 0:
            raise ValueError(f"threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
