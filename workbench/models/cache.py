"""The activation cache and the memory budget every recording checks before it runs (DESIGN)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from workbench.kernels.buffers import pooled_bytes
from workbench.models.cache_methods import ResidualStreamMethods

_budget_override: int | None = None
DEFAULT_FRACTION_OF_FREE_MEMORY = 0.5


class RecurrentCache(ResidualStreamMethods, dict):
    """A dict of hook name -> tensor `[batch, pos, ...]`, plus `metadata` about the run, and the
    TransformerLens `ActivationCache` methods that have a recurrent meaning (`cache_methods`).

    `metadata` holds the path ("reference" / "fused") and, per layer, the kernel that ran. `model` is
    the model that filled it (set by `run_with_cache`), which the residual-stream methods read.
    `cache["resid_post", 1]` and `cache["c", 0]` look names up as `get_act_name` builds them.
    """

    def __init__(self, *args: Any, metadata: dict[str, Any] | None = None, model: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.model = model
        self.has_batch_dim = True

    def __getitem__(self, key: Any) -> Tensor:
        if isinstance(key, tuple):
            from workbench.utils import get_act_name

            key = get_act_name(*key)
        if not super().__contains__(key) and self.model is not None:
            key = getattr(self.model, "hook_aliases", {}).get(key, key)  # another tool's name for the hook
        return super().__getitem__(key)

    def stack(self, quantity: str) -> Tensor:
        """Stack one mixer quantity over layers: `[layer, batch, pos, ...]`."""
        names = sorted(
            (k for k in self if k.startswith("blocks.") and k.endswith(f".hook_{quantity}")),
            key=lambda k: int(k.split(".")[1]),
        )
        if not names:
            raise KeyError(f"no cached quantity {quantity!r}; cached: {sorted(self)[:10]} ...")
        return torch.stack([self[k] for k in names])

    def remove_batch_dim(self) -> RecurrentCache:
        """Drop the batch axis of every tensor, in place (as TransformerLens does); the batch must be 1."""
        if not self.has_batch_dim:
            return self
        sizes = {name: value.shape[0] for name, value in self.items() if value.dim() > 0}
        wide = {name: size for name, size in sizes.items() if size != 1}
        if wide:
            name, size = next(iter(wide.items()))
            raise ValueError(f"remove_batch_dim needs a batch of 1, but {name!r} has batch {size}: index one "
                             "row of the input first")
        for name in sizes:
            super().__setitem__(name, super().__getitem__(name)[0])
        self.has_batch_dim = False
        return self

    def to(self, device: str | torch.device) -> RecurrentCache:
        """Move every tensor to `device`, in place; returns the cache."""
        for name, value in list(self.items()):
            super().__setitem__(name, value.to(device))
        return self

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
