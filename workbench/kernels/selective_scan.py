"""Selective scan (S6) of Mamba: Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces", Algorithm 2, with the zero-order-hold discretisation of A and the
Euler discretisation of B used by the official implementation:

    s_t = exp(delta_t A) * s_{t-1} + (delta_t u_t) B_t        # [batch, d, n]
    y_t = s_t C_t + D u_t                                     # [batch, d]

`selective_scan_reference` is the loop. `selective_scan` works chunk by chunk of positions, so
with return_states=False only one chunk of [batch, chunk, d, n] states is ever held. The S6 step is
already wide (batch * d * n elements), so on CPU the time goes into element-wise passes over
[batch, pos, d, n], not Python overhead: the fast path cuts the passes from 7 to 5 (decays, inputs
and the C contraction built per chunk in big ops, the recurrence done in place in the chunk's
buffer, no allocation per step). Under autograd it scans each chunk with `linear_scan` instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .buffers import recording_buffer
from .linear_scan import linear_scan

__all__ = ["s6_chunk_size", "selective_scan", "selective_scan_reference"]

CHUNK_ELEMENTS = 1 << 20  # elements in one chunk buffer: 4 MiB in float32, about a core's cache


def s6_chunk_size(batch: int, d: int, n: int) -> int:
    """Positions per chunk so one [batch, chunk, d, n] buffer holds about CHUNK_ELEMENTS: a power
    of two in [1, 64]. Measured on a 2-core CPU: 4 for batch 16, d 1024, n 16; 16 for batch 4."""
    per_position = max(1, batch * d * n)
    return 1 << min(6, max(0, (CHUNK_ELEMENTS // per_position).bit_length() - 1))


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
    if pos == 0:
        return u.new_empty(u.shape), u.new_empty(batch, 0, d, n) if return_states else s
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
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Chunked S6 scan (Gu & Dao 2023): the same numbers as `selective_scan_reference`.

    Positions are processed chunk_size at a time: the chunk's decays exp(delta A) and inputs
    (delta u) B are built in one op each, the recurrence runs from the state entering the chunk,
    and the states are contracted with C by one vecdot. With return_states=False only one chunk of
    states exists at a time (memory 2 * batch * chunk_size * d * n, ~8 MiB by default); with
    return_states=True all [batch, pos, d, n] states are returned. Without autograd the recurrence
    runs in place in the chunk's buffer; with autograd each chunk is scanned by `linear_scan`.

    u, delta: [batch, pos, d]; A: [d, n]; B, C: [batch, pos, n]; D: [d]; state0: [batch, d, n]
    or None (zeros); chunk_size: None picks `s6_chunk_size(batch, d, n)`.
    Returns (y [batch, pos, d], states [batch, pos, d, n] or last state [batch, d, n]).
    """
    dtype = _promote(u, delta, A, B, C, D, state0)
    u, delta, A, B, C, D = (x.to(dtype) for x in (u, delta, A, B, C, D))
    batch, pos, d = u.shape
    n = A.shape[-1]
    chunk_size = s6_chunk_size(batch, d, n) if chunk_size is None else chunk_size
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    s = u.new_zeros(batch, d, n) if state0 is None else state0.to(dtype)  # [batch, d, n]
    inputs = (u, delta, A, B, C, D, s)
    if pos == 0:
        return selective_scan_reference(*inputs, return_states)
    if torch.is_grad_enabled() and any(x.requires_grad for x in inputs):
        return _selective_scan_autograd(*inputs, return_states, chunk_size)
    return _selective_scan_in_place(*inputs, return_states, chunk_size)


def _selective_scan_in_place(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    s: Tensor,
    return_states: bool,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """`selective_scan` without autograd: every chunk's buffers written in place, none allocated
    per step."""
    batch, pos, d = u.shape
    n = A.shape[-1]
    size = min(chunk_size, pos)
    du = delta * u  # [batch, pos, d]
    decay = u.new_empty(batch, size, d, n)  # exp(delta A) of one chunk
    if return_states:  # the recorded states: [batch, pos, d, n]
        states = recording_buffer((batch, pos, d, n), u.dtype, u.device)
    else:
        states = u.new_empty(batch, size, d, n)
    y = u.new_empty(batch, pos, d)
    for start in range(0, pos, size):
        sl = slice(start, min(start + size, pos))
        length = sl.stop - sl.start
        dA = decay[:, :length]  # [batch, chunk, d, n]
        s_chunk = states[:, sl] if return_states else states[:, :length]  # [batch, chunk, d, n]
        torch.mul(delta[:, sl, :, None], A, out=dA).exp_()
        torch.mul(du[:, sl, :, None], B[:, sl, None, :], out=s_chunk)  # (delta u) B
        steps, decays = s_chunk.unbind(1), dA.unbind(1)  # [batch, d, n] each, one call per chunk
        previous = s
        for s_t, dA_t in zip(steps, decays, strict=True):  # s_t = exp(delta_t A) s_{t-1} + (delta_t u_t) B_t
            previous = s_t.addcmul_(dA_t, previous)
        torch.linalg.vecdot(s_chunk, C[:, sl, None, :], out=y[:, sl])  # y_t = s_t C_t, [batch, chunk, d]
        s = s_chunk[:, -1].clone() if not return_states else s_chunk[:, -1]  # [batch, d, n]
    y.addcmul_(D, u)  # + D u
    return (y, states) if return_states else (y, s)


def _selective_scan_autograd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    s: Tensor,
    return_states: bool,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """`selective_scan` under autograd: no in-place writes; each chunk scanned by `linear_scan`."""
    pos = u.shape[1]
    ys, states = [], []
    for start in range(0, pos, chunk_size):
        sl = slice(start, start + chunk_size)
        dA = torch.exp(delta[:, sl, :, None] * A)  # [batch, chunk, d, n]
        dBu = (delta[:, sl] * u[:, sl])[..., None] * B[:, sl, None, :]  # [batch, chunk, d, n]
        s_chunk = linear_scan(dA, dBu, s)  # [batch, chunk, d, n]
        y = torch.linalg.vecdot(s_chunk, C[:, sl, None, :])  # y_t = s_t C_t, [batch, chunk, d]
        ys.append(y + D * u[:, sl])
        s = s_chunk[:, -1]  # [batch, d, n]
        if return_states:
            states.append(s_chunk)
    y = torch.cat(ys, dim=1)  # [batch, pos, d]
    if return_states:
        return y, torch.cat(states, dim=1)  # [batch, pos, d, n]
    return y, s
