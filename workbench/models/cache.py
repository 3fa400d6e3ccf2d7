"""The activation cache and the memory budget every recording checks before it runs (DESIGN)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from workbench.kernels.buffers import pooled_bytes

_budget_override: int | None = None
DEFAULT_FRACTION_OF_FREE_MEMORY = 0.5


class RecurrentCache(dict):
    """A plain dict of hook name -> tensor `[batch, pos, ...]`, plus `metadata` about the run.

    `metadata` holds the path ("reference" / "fused") and, per layer, the kernel that ran.
    """

    def __init__(self, *args: Any, metadata: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.metadata: dict[str, Any] = dict(metadata or {})

    def stack(self, quantity: str) -> Tensor:
        """Stack one mixer quantity over layers: `[layer, batch, pos, ...]`."""
        names = sorted(
            (k for k in self if k.startswith("blocks.") and k.endswith(f".hook_{quantity}")),
            key=lambda k: int(k.split(".")[1]),
        )
        if not names:
            raise KeyError(f"no cached quantity {quantity!r}; cached: {sorted(self)[:10]} ...")
        return torch.stack([self[k] for k in names])


def free_memory_bytes(device: torch.device | str = "cpu") -> int:
    """Bytes a recording could use on `device` now: CUDA's free count plus what torch's caching
    allocator holds unused; on CPU MemAvailable from /proc/meminfo plus the pooled recording buffers
    (workbench/kernels/buffers.py), which the next recording reuses."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    pooled = pooled_bytes()
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 + pooled
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")) + pooled


def set_memory_budget(n_bytes: int | None) -> None:
    """Fix the recording budget in bytes for this process; None returns to the default fraction."""
    global _budget_override
    if n_bytes is not None and n_bytes <= 0:
        raise ValueError(f"memory budget must be positive, got {n_bytes}")
    _budget_override = n_bytes


def memory_budget(device: torch.device | str = "cpu") -> int:
    """The budget a recording may use: the user's setting, else half of the free memory."""
    if _budget_override is not None:
        return _budget_override
    return int(free_memory_bytes(device) * DEFAULT_FRACTION_OF_FREE_MEMORY)
