"""Which kernel the fused path runs: the forward-only GPU kernels when they may be used, the compiled
CPU kernels, else the pure-PyTorch ones. Kept apart from the kernels so that importing the mixers
never imports Triton (about 80 ms) on a machine that will not use it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["fastest_linear_scan", "fastest_selective_scan", "use_triton"]


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


def fastest_selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state0: Tensor | None
) -> tuple[str, Callable[..., tuple[Tensor, Tensor]]]:
    """(name, kernel) of the fastest S6 scan for these inputs, all with `selective_scan`'s contract:
    Triton on CUDA, the compiled C++ scan on CPU (both when no gradient is needed), else the
    chunked PyTorch scan (any device, differentiable)."""
    if use_triton(u, delta, A, B, C):
        from workbench.kernels.triton_selective_scan import triton_selective_scan

        return "Triton selective scan (CUDA)", triton_selective_scan
    from workbench.kernels.cpu_compiled import compiled_selective_scan, use_compiled_kernels

    if use_compiled_kernels(u, delta, A, B, C, D, state0):  # CPU, no gradient needed, C++ kernel built
        return "compiled C++ selective scan (CPU)", compiled_selective_scan
    from workbench.kernels.selective_scan import selective_scan

    return "chunked selective scan", selective_scan


def fastest_linear_scan(
    a: Tensor, b: Tensor, h0: Tensor | None
) -> tuple[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]]:
    """(name, kernel) of the fastest scan h_t = a_t ⊙ h_{t-1} + b_t returning every h, all with
    `linear_scan`'s contract: Triton on CUDA, the compiled C++ scan on CPU for [batch, pos, d]
    inputs (both when no gradient is needed), else the chunked PyTorch scan (differentiable)."""
    if use_triton(a, b, h0):
        from workbench.kernels.triton_scan import triton_linear_scan

        return "Triton linear scan (CUDA)", triton_linear_scan
    from workbench.kernels.cpu_compiled import compiled_linear_scan, use_compiled_kernels

    if a.dim() == 3 and a.shape == b.shape and use_compiled_kernels(a, b, h0):
        return "compiled C++ linear scan (CPU, no grad)", compiled_linear_scan
    from workbench.kernels.linear_scan import linear_scan

    return "chunked linear scan", linear_scan
