"""Triton kernel for the diagonal linear recurrence h_t = a_t * h_{t-1} + b_t, every state written.

This is the recording scan of S6/Mamba (state [d, n] flattened), minGRU / minLSTM (a = 1 - z,
b = z * h_tilde), RG-LRU and an LSTM's cell state given its gates. On a GPU the recurrence is
memory-bound, so one program owns a (batch row, block of channels) pair and walks the positions in
order, keeping its slice of h in registers: every element of a and b is read once and every state
written once, which is the least traffic any kernel that returns all states can move. Channels
are contiguous, so each step is one coalesced load of a, one of b and one store of h.

Accumulation is float32 whatever the input dtype. Forward only (no autograd): the workbench uses it
to record states, and training keeps the differentiable scans in `linear_scan`.
Correctness is tested on CPU under Triton's interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["triton_available", "triton_linear_scan"]

try:  # Triton is an optional extra: the package installs and runs without it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None


@functools.cache
def triton_available() -> bool:
    """True where Triton imports (on a CUDA machine, or anywhere under TRITON_INTERPRET=1)."""
    return triton is not None


if triton is not None:

    @triton.jit
    def _linear_scan_kernel(
        a_ptr, b_ptr, h0_ptr, out_ptr,
        length, channels,
        stride_ab, stride_ap, stride_bb, stride_bp, stride_ob, stride_op,
        HAS_H0: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0)  # batch index
        offsets = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # channel indices of this program
        mask = offsets < channels
        if HAS_H0:
            h = tl.load(h0_ptr + row * channels + offsets, mask=mask, other=0.0).to(tl.float32)
        else:
            h = tl.zeros([BLOCK], dtype=tl.float32)
        a_row = a_ptr + row * stride_ab + offsets
        b_row = b_ptr + row * stride_bb + offsets
        out_row = out_ptr + row * stride_ob + offsets
        for t in range(length):
            a = tl.load(a_row + t * stride_ap, mask=mask, other=0.0).to(tl.float32)
            b = tl.load(b_row + t * stride_bp, mask=mask, other=0.0).to(tl.float32)
            h = a * h + b
            tl.store(out_row + t * stride_op, h.to(out_ptr.dtype.element_ty), mask=mask)


def _block_size(channels: int) -> int:
    """Channels per program: wide enough for coalesced 128-byte loads, capped to keep many programs."""
    return max(16, min(1024, triton.next_power_of_2(channels)))


def triton_linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """Every state of h_t = a_t * h_{t-1} + b_t, t = 0..pos-1, from h_{-1} = h0 (zeros if None).

    a, b: [batch, pos, *state], broadcastable to one shape (a may be broadcast over state dims, as
    Mamba2's per-head decay is); h0: [batch, *state]. Returns [batch, pos, *state] in b's dtype.
    Same contract as `linear_scan`; forward only.
    """
    if triton is None:
        raise RuntimeError("triton_linear_scan needs Triton (pip install triton, or the [triton] extra)")
    shape = torch.broadcast_shapes(a.shape, b.shape)
    if len(shape) < 2:
        raise ValueError(f"a and b must be [batch, pos, *state], got shapes {tuple(a.shape)}, {tuple(b.shape)}")
    batch, length = shape[0], shape[1]
    state_shape = shape[2:]
    channels = 1
    for size in state_shape:
        channels *= size
    out = torch.empty(shape, dtype=b.dtype, device=b.device)  # [batch, pos, *state]
    if length == 0 or batch == 0 or channels == 0:
        return out
    # [batch, pos, channels], channels contiguous; expand() then reshape copies only broadcast dims
    a_flat = a.expand(shape).reshape(batch, length, channels)
    b_flat = b.expand(shape).reshape(batch, length, channels)
    if a_flat.stride(-1) != 1:
        a_flat = a_flat.contiguous()
    if b_flat.stride(-1) != 1:
        b_flat = b_flat.contiguous()
    out_flat = out.view(batch, length, channels)
    if h0 is not None:
        h0 = h0.expand(batch, *state_shape).reshape(batch, channels).contiguous()
    block = _block_size(channels)
    grid = (batch, triton.cdiv(channels, block))
    _linear_scan_kernel[grid](
        a_flat, b_flat, h0 if h0 is not None else out_flat, out_flat,
        length, channels,
        a_flat.stride(0), a_flat.stride(1), b_flat.stride(0), b_flat.stride(1),
        out_flat.stride(0), out_flat.stride(1),
        HAS_H0=h0 is not None, BLOCK=block,
    )  # fmt: skip
    return out
