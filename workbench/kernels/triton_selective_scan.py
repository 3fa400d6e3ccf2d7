"""Triton kernel for the S6 selective scan (Gu & Dao 2023, Alg. 2), every state optionally written.

s_t = exp(delta_t A) * s_{t-1} + (delta_t u_t) B_t,   y_t = s_t C_t + D u_t,   s: [d, n] per row.

One program owns a batch row and a block of channels d, holds its [BLOCK_D, n] slice of the state in
registers and walks the positions: the discretisation exp(delta A), the input delta u B, the state
update and the read-out against C are fused, so nothing of size [pos, d, n] is ever built unless the
states are asked for (then each is stored once, as the recording needs). Float32 accumulation.
Forward only; training uses `selective_scan_trainable`. Tested on CPU under TRITON_INTERPRET=1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from workbench.kernels.triton_scan import triton, triton_available

__all__ = ["triton_available", "triton_selective_scan"]

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _selective_scan_kernel(
        u_ptr, delta_ptr, a_ptr, b_ptr, c_ptr, d_ptr, s0_ptr, y_ptr, states_ptr, last_ptr,
        length, d_inner, d_state,
        stride_ub, stride_up, stride_bb, stride_bp,
        HAS_S0: tl.constexpr, WRITE_STATES: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0)
        channels = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # [BLOCK_D]
        states_n = tl.arange(0, BLOCK_N)  # [BLOCK_N]
        d_mask = channels < d_inner
        n_mask = states_n < d_state
        mask = d_mask[:, None] & n_mask[None, :]
        dn = channels[:, None] * d_state + states_n[None, :]  # offsets into a [d, n] slab
        A = tl.load(a_ptr + dn, mask=mask, other=0.0).to(tl.float32)  # [BLOCK_D, BLOCK_N]
        D = tl.load(d_ptr + channels, mask=d_mask, other=0.0).to(tl.float32)  # [BLOCK_D]
        slab = d_inner * d_state
        if HAS_S0:
            s = tl.load(s0_ptr + row * slab + dn, mask=mask, other=0.0).to(tl.float32)
        else:
            s = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        for t in range(length):
            ut_offset = row * stride_ub + t * stride_up + channels
            u = tl.load(u_ptr + ut_offset, mask=d_mask, other=0.0).to(tl.float32)  # [BLOCK_D]
            dt = tl.load(delta_ptr + ut_offset, mask=d_mask, other=0.0).to(tl.float32)
            bt_offset = row * stride_bb + t * stride_bp + states_n
            B = tl.load(b_ptr + bt_offset, mask=n_mask, other=0.0).to(tl.float32)  # [BLOCK_N]
            C = tl.load(c_ptr + bt_offset, mask=n_mask, other=0.0).to(tl.float32)
            s = tl.exp(dt[:, None] * A) * s + (dt * u)[:, None] * B[None, :]
            y = tl.sum(s * C[None, :], axis=1) + D * u  # [BLOCK_D]
            tl.store(y_ptr + ut_offset, y.to(y_ptr.dtype.element_ty), mask=d_mask)
            if WRITE_STATES:
                tl.store(states_ptr + (row * length + t) * slab + dn, s.to(states_ptr.dtype.element_ty), mask=mask)
        tl.store(last_ptr + row * slab + dn, s.to(last_ptr.dtype.element_ty), mask=mask)


def triton_selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    state0: Tensor | None = None,
    return_states: bool = False,
) -> tuple[Tensor, Tensor]:
    """Same contract as `selective_scan`: u, delta [batch, pos, d]; A [d, n]; B, C [batch, pos, n];
    D [d]; state0 [batch, d, n] or None. Returns (y [batch, pos, d], states [batch, pos, d, n] if
    return_states else the last state [batch, d, n]), in u's dtype."""
    if triton is None:
        raise RuntimeError("triton_selective_scan needs Triton (pip install triton)")
    batch, length, d_inner = u.shape
    d_state = A.shape[-1]
    fits = delta.shape == u.shape and A.shape == (d_inner, d_state)
    if not fits or B.shape != (batch, length, d_state) or C.shape != B.shape:
        raise ValueError(
            f"shapes do not fit S6: u {tuple(u.shape)}, delta {tuple(delta.shape)}, A {tuple(A.shape)}, "
            f"B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    dtype = u.dtype
    u, delta = u.contiguous(), delta.to(dtype).contiguous()
    B, C = B.to(dtype).contiguous(), C.to(dtype).contiguous()
    A, D = A.to(torch.float32).contiguous(), D.to(torch.float32).contiguous()
    y = torch.empty_like(u)  # [batch, pos, d]
    last = u.new_empty(batch, d_inner, d_state)  # [batch, d, n]
    states = u.new_empty(batch, length, d_inner, d_state) if return_states else last  # [batch, pos, d, n]
    if state0 is not None:
        state0 = state0.to(dtype).contiguous()
    if length == 0:
        if state0 is not None:
            last.copy_(state0)
        else:
            last.zero_()
        return y, states if return_states else last
    block_n = max(16, triton.next_power_of_2(d_state))
    block_d = max(16, min(64, 4096 // block_n))
    grid = (batch, triton.cdiv(d_inner, block_d))
    _selective_scan_kernel[grid](
        u, delta, A, B, C, D, state0 if state0 is not None else last, y, states, last,
        length, d_inner, d_state,
        u.stride(0), u.stride(1), B.stride(0), B.stride(1),
        HAS_S0=state0 is not None, WRITE_STATES=return_states, BLOCK_D=block_d, BLOCK_N=block_n,
    )  # fmt: skip
    return y, states if return_states else last
