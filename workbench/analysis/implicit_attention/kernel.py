"""The one kernel behind every implicit-attention map: a causal L×L matrix from log-decays.

Every gated-linear recurrence s_t = exp(λ_t) ⊙ s_{t−1} + B_t v_t, y_t = C_t · s_t unrolls to
y_t = Σ_{j≤t} α_{t,j} v_j with (Ali et al. 2024, eq. 9–11; Zimerman et al. 2024, eq. 3)

    α_{t,j} = Σ_n C_t[n] · exp(Σ_{k=j+1..t} λ_k[n]) · B_j[n].

`decay_attention` computes it chunk by chunk of positions, as the SSD algorithm of Mamba2 (Dao &
Gu 2024, listing 1) computes its matrix: inside a chunk the exact segment sums (`segsum`, a masked
cumulative sum: no difference of two long cumulative sums, so no cancellation); between chunks a
rank-n factorisation through the chunk totals. Every exponent is a direct sum of log-decays ≤ 0,
so nothing divides and nothing underflows that is not truly below float range (DESIGN,
"Numerics"). `decay_attention_row` gives one query row in O(L·n). `decay_attention_naive` is the
papers' triple loop, the oracle the fast paths are tested and timed against.

When the decay is one scalar per step shared by every state entry (Mamba2's per-head decay, Dao &
Gu 2024), α is the SSD matrix (C Bᵀ) ⊙ exp(segsum(λ)): `scalar_decay_attention`, O(L²·n) with no
d_state-sized exponentials.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEFAULT_CHUNK",
    "decay_attention",
    "decay_attention_naive",
    "decay_attention_row",
    "chunk_size",
    "decay_attention_work_bytes",
    "initial_state_term",
    "scalar_decay_attention",
    "scalar_decay_work_bytes",
    "segsum",
]

DEFAULT_CHUNK: int | None = None  # None: `chunk_size(L)`


def chunk_size(L: int) -> int:
    """Positions per chunk: a power of two near sqrt(L/2) in [8, 32], balancing the L·n·Q work of
    the diagonal blocks against the L²·n/Q of the off-diagonal factors (measured on one CPU core:
    8 at L = 48, 16 at L = 256, 16–32 at L = 1024, each 2–5x faster than 64)."""
    return 1 << min(5, max(3, round(math.log2(max(L / 2, 1)) / 2)))


def segsum(x: Tensor) -> Tensor:
    """Segment sums x [..., T] -> [..., T, T]: out[t, j] = Σ_{k=j+1..t} x_k for t ≥ j, −inf above.

    Dao & Gu 2024 (Mamba2, `segsum`): a cumulative sum of a masked copy, so each entry is a direct
    sum of the terms it needs and never the difference of two long sums.
    """
    T = x.shape[-1]
    terms = x[..., :, None].expand(*x.shape, T)  # [..., k, j] = x_k
    strictly_below = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-1)
    out = terms.masked_fill(~strictly_below, 0.0).cumsum(dim=-2)  # [..., t, j]
    on_or_below = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(0)
    return out.masked_fill(~on_or_below, -math.inf)


def _expand(x: Tensor, shape: torch.Size) -> Tensor:
    return x.expand(shape) if x.shape != shape else x


def decay_attention(log_decay: Tensor, C: Tensor, B: Tensor, chunk: int | None = DEFAULT_CHUNK) -> Tensor:
    """α [..., L, L] from log_decay [..., L, n] (≤ 0) and C, B broadcastable to it (see module).

    α[..., t, j] = Σ_n C[t, n] exp(Σ_{k=j+1..t} log_decay[k, n]) B[j, n] for j ≤ t; exactly 0 above.
    """
    *lead, L, n = log_decay.shape
    shape = log_decay.shape
    C, B = _expand(C, shape), _expand(B, shape)
    Q = max(1, min(chunk or chunk_size(L), L))
    nc = -(-L // Q)
    pad = nc * Q - L
    if pad:  # padded positions: decay 1, C = B = 0, cropped at the end
        log_decay, C, B = (F.pad(t, (0, 0, 0, pad)) for t in (log_decay, C, B))
    ld = log_decay.reshape(*lead, nc, Q, n)  # [..., c, q, n]
    C, B = C.reshape(ld.shape), B.reshape(ld.shape)

    # Diagonal blocks: exact segment sums inside each chunk.
    decay_in = segsum(ld.transpose(-1, -2)).exp()  # [..., c, n, q, r]
    diag = (C.transpose(-1, -2)[..., :, None] * decay_in
            * B.transpose(-1, -2)[..., None, :]).sum(-3)  # [..., c, q, r]
    if nc == 1:
        return diag[..., 0, :L, :L]

    # Off-diagonal blocks (query chunk a > key chunk b): Σ_{k=j+1..t} splits into the rest of chunk
    # b after j, the whole chunks b+1..a−1, and the start of chunk a up to t.
    from_start = ld.cumsum(-2)  # [..., c, q, n]: Σ_{k=start..q}
    to_end_incl = ld.flip(-2).cumsum(-2).flip(-2)  # Σ_{k=r..end}
    to_end = torch.cat([to_end_incl[..., 1:, :], torch.zeros_like(to_end_incl[..., :1, :])], -2)
    left = C * from_start.exp()  # [..., c, q, n]
    right = B * to_end.exp()  # [..., c, r, n]
    totals = ld.sum(-2).transpose(-1, -2)  # [..., n, c]
    through = segsum(totals)  # [..., n, a, b]: Σ_{c=b+1..a}
    between = torch.cat([torch.full_like(through[..., :1, :], -math.inf), through[..., :-1, :]], -2)
    between = between.exp().permute(*range(len(lead)), -2, -1, -3)  # [..., a, b, n]: Σ_{b+1..a−1}
    weighted = left[..., :, None, :, :] * between[..., :, :, None, :]  # [..., a, b, q, n]
    blocks = weighted @ right[..., None, :, :, :].transpose(-1, -2)  # [..., a, b, q, r]
    index = torch.arange(nc, device=ld.device)
    blocks[..., index, index, :, :] = diag
    out = blocks.transpose(-3, -2).reshape(*lead, nc * Q, nc * Q)  # [..., t, j]
    return out[..., :L, :L]


def decay_attention_work_bytes(lead: int, L: int, n: int, element: int,
                               chunk: int | None = DEFAULT_CHUNK) -> int:
    """Peak bytes `decay_attention` holds for `lead` independent maps (batch × channels), estimated."""
    Q = max(1, min(chunk or chunk_size(L), L))
    nc = -(-L // Q)
    Lp = nc * Q
    inside = 3 * Lp * n * Q  # segment sums, their exp, the product
    between = 2 * nc * nc * Q * n + 2 * Lp * Lp  # weighted factors, blocks and the reshaped copy
    return element * lead * (inside + between + 8 * Lp * n)


def decay_attention_row(log_decay: Tensor, C: Tensor, B: Tensor, t: int) -> Tensor:
    """Row t of α, [..., L] (zeros after t), in O(L·n): a reverse cumulative sum from t.

    log_decay [..., L, n] or [..., L, 1] (a scalar decay, Mamba2), C and B broadcastable with it.
    """
    L = log_decay.shape[-2]
    if not 0 <= t < L:
        raise IndexError(f"query position {t} out of range for {L} positions")
    C, B = (x.expand(*x.shape[:-2], L, x.shape[-1]) for x in (C, B))  # a position-free C or B broadcasts
    ld = log_decay[..., : t + 1, :]
    incl = ld.flip(-2).cumsum(-2).flip(-2)  # [..., j, n]: Σ_{k=j..t}
    excl = torch.cat([incl[..., 1:, :], torch.zeros_like(incl[..., :1, :])], -2)  # Σ_{k=j+1..t}
    row = (C[..., t, None, :] * excl.exp() * B[..., : t + 1, :]).sum(-1)  # [..., t+1]
    return F.pad(row, (0, L - t - 1))


def initial_state_term(log_decay: Tensor, C: Tensor, state0: Tensor) -> Tensor:
    """Σ_n C_t[n] exp(Σ_{k=0..t} λ_k[n]) s_{−1}[n], [..., L]: what the initial state adds to y_t."""
    return (C * log_decay.cumsum(-2).exp() * state0[..., None, :]).sum(-1)


def scalar_decay_attention(log_decay: Tensor, C: Tensor, B: Tensor) -> Tensor:
    """α [..., L, L] for a scalar decay per step: log_decay [..., L], C and B [..., L, n].

    α[t, j] = (C_t · B_j) exp(Σ_{k=j+1..t} λ_k) for j ≤ t, exactly 0 above (exp(−inf)): the SSD
    matrix of Mamba2 (Dao & Gu 2024, eq. 16), every exponent a direct segment sum.
    """
    scores = C @ B.transpose(-1, -2)  # [..., t, j]
    return scores * segsum(log_decay).exp()


def scalar_decay_work_bytes(lead: int, L: int, n: int, element: int) -> int:
    """Peak bytes `scalar_decay_attention` holds for `lead` maps: scores, segment sums, their exp."""
    return element * lead * (4 * L * L + 2 * L * n)


def decay_attention_naive(log_decay: Tensor, C: Tensor, B: Tensor) -> Tensor:
    """The papers' O(L³) loop over (t, j) with the decay product over k: the oracle to beat.

    log_decay [..., L, n] (or [..., L, 1], a scalar decay), C and B broadcastable with it.
    """
    *lead, L, _ = torch.broadcast_shapes(log_decay.shape, C.shape, B.shape)
    out = log_decay.new_zeros(*lead, L, L)
    for t in range(L):
        for j in range(t + 1):
            decay = torch.exp(log_decay[..., j + 1 : t + 1, :]).prod(-2)  # [..., n]
            out[..., t, j] = (C[..., t, :] * decay * B[..., j, :]).sum(-1)
    return out
