"""When the fused path may use the forward-only GPU kernels; kept apart from them so that importing
the mixers never imports Triton (about 80 ms) on a machine that will not use it."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["use_triton"]


def use_triton(*tensors: Tensor | None) -> bool:
    """Triton's forward-only kernels run where every tensor is on a CUDA device, no gradient is
    wanted through them (recording, evaluation), and Triton imports."""
    present = [t for t in tensors if t is not None]
    if not present or not all(t.is_cuda for t in present):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return False
    from workbench.kernels.triton_scan import triton_available

    return triton_available()
