"""Selective scan (S6) of Mamba: Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces", Algorithm 2, with the zero-order-hold discretisation of A and the
Euler discretisation of B used by the official implementation:

    s_t = exp(delta_t A) * s_{t-1} + (delta_t u_t) B_t        # [batch, d, n]
    y_t = s_t C_t + D u_t                                     # [batch, d]

`selective_scan_reference` is the loop; `selective_scan` runs `linear_scan` over chunks of
positions, so with return_states=False only one chunk of [batch, chunk, d, n] states is ever held.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .linear_scan import linear_scan

__all__ = ["selective_scan", "selective_scan_reference"]


def _promote(*tensors: Tensor | None) -> torch.dtype:
    dtype = torch.float32
    for x in tensors:
        if x is not None:
            dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    state0: Tensor | None = None,
    return_states: bool = False,
) -> tuple[Tensor, Tensor]:
    """Step-by-step S6 scan (Gu & Dao 2023, Alg. 2), the oracle for `selective_scan`.

    u, delta: [batch, pos, d]; A: [d, n] (negative reals); B, C: [batch, pos, n]; D: [d];
    state0: [batch, d, n] or None (zeros).
    Returns (y [batch, pos, d], states [batch, pos, d, n] if return_states else the last state
    [batch, d, n]).
    """
    dtype = _promote(u, delta, A, B, C, D, state0)
    u, delta, A, B, C, D = (x.to(dtype) for x in (u, delta, A, B, C, D))
    batch, pos, d = u.shape
    n = A.shape[-1]
    s = u.new_zeros(batch, d, n) if state0 is None else state0.to(dtype)  # [batch, d, n]
    ys, states = [], []
    for t in range(pos):
        dA = torch.exp(delta[:, t, :, None] * A)  # [batch, d, n]
        dBu = (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]  # [batch, d, n]
        s = dA * s + dBu  # [batch, d, n]
        ys.append((s * C[:, t, None, :]).sum(-1) + D * u[:, t])  # [batch, d]
        if return_states:
            states.append(s)
    y = torch.stack(ys, dim=1)  # [batch, pos, d]
    if return_states:
        return y, torch.stack(states, dim=1)  # [batch, pos, d, n]
    return y, s


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    state0: Tensor | None = None,
    return_states: bool = False,
    chunk_size: int = 128,
) -> tuple[Tensor, Tensor]:
    """Chunked parallel S6 scan (Gu & Dao 2023): the same numbers as `selective_scan_reference`.

    Positions are processed chunk_size at a time: the chunk's decays exp(delta A) and inputs
    (delta u) B are built, scanned in parallel by `linear_scan` from the state entering the chunk,
    and contracted with C. With return_states=False only one chunk of states exists at a time
    (memory batch * chunk_size * d * n); with return_states=True all [batch, pos, d, n] states are
    returned.

    u, delta: [batch, pos, d]; A: [d, n]; B, C: [batch, pos, n]; D: [d]; state0: [batch, d, n]
    or None (zeros). Returns (y [batch, pos, d], states [batch, pos, d, n] or last state
    [batch, d, n]).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype = _promote(u, delta, A, B, C, D, state0)
    u, delta, A, B, C, D = (x.to(dtype) for x in (u, delta, A, B, C, D))
    batch, pos, d = u.shape
    n = A.shape[-1]
    s = u.new_zeros(batch, d, n) if state0 is None else state0.to(dtype)  # [batch, d, n]
    inner = max(1, int(round(chunk_size**0.5)))
    ys, states = [], []
    for start in range(0, pos, chunk_size):
        sl = slice(start, start + chunk_size)
        dA = torch.exp(delta[:, sl, :, None] * A)  # [batch, chunk, d, n]
        dBu = (delta[:, sl] * u[:, sl])[..., None] * B[:, sl, None, :]  # [batch, chunk, d, n]
        s_chunk = linear_scan(dA, dBu, s, chunk_size=inner)  # [batch, chunk, d, n]
        y = torch.einsum("bldn,bln->bld", s_chunk, C[:, sl])  # [batch, chunk, d]
        ys.append(y + D * u[:, sl])
        s = s_chunk[:, -1]  # [batch, d, n]
        if return_states:
            states.append(s_chunk)
    y = torch.cat(ys, dim=1)  # [batch, pos, d]
    if return_states:
        return y, torch.cat(states, dim=1)  # [batch, pos, d, n]
    return y, s
