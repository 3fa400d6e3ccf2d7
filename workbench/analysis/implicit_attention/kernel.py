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
Gu 2024), α is the SSD matrix (C Bᵀ) ⊙ exp(segsum(λ)): `scalar_decay_attention`, chunked the same
way, where each off-diagonal block is one matrix product scaled by one number, so the whole map is
a single L×L×n matrix product, one in-place scaling pass, and exact segment sums on the diagonal
blocks (no L×L segment-sum tensor, no d_state-sized exponentials).
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
    "exclusive_suffix_sum",
    "initial_state_term",
    "scalar_chunk_size",
    "scalar_decay_attention",
    "scalar_decay_work_bytes",
    "segsum",
    "sums_between_chunks",
]

DEFAULT_CHUNK: int | None = None  # None: `chunk_size(L)`


def chunk_size(L: int) -> int:
    """Positions per chunk: a power of two near sqrt(L/2) in [8, 32], balancing the L·n·Q work of
    the diagonal blocks against the L²·n/Q of the off-diagonal factors (the best sizes measured:
    benchmarks/implicit_attention_results.md, "Choices measured")."""
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


def exclusive_suffix_sum(x: Tensor) -> Tensor:
    """out[..., j] = Σ_{k=j+1..T−1} x[..., k] (0 at the last position): a reversed cumulative sum."""
    inclusive = x.flip(-1).cumsum(-1).flip(-1)  # [..., j]: Σ_{k=j..end}
    return torch.cat([inclusive[..., 1:], torch.zeros_like(inclusive[..., :1])], -1)


def sums_between_chunks(totals: Tensor) -> Tensor:
    """Chunk totals [..., c] -> [..., a, b]: Σ_{c=b+1..a−1} totals[c] for a > b, −inf for a ≤ b.

    What a key in chunk b and a query in chunk a have between them besides their own chunks' parts;
    a direct segment sum (`segsum`), so no cancellation however many chunks lie between.
    """
    through = segsum(totals)  # [..., a, b]: Σ_{c=b+1..a}
    return torch.cat([torch.full_like(through[..., :1, :], -math.inf), through[..., :-1, :]], -2)


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
    between = sums_between_chunks(totals)  # [..., n, a, b]: Σ_{c=b+1..a−1}
    between = between.exp().permute(*range(len(lead)), -2, -1, -3)  # [..., a, b, n]
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


def scalar_chunk_size(L: int) -> int:
    """Positions per chunk of `scalar_decay_attention` (and RWKV's `wkv_attention`): 32, or L if
    shorter. The off-diagonal work (one L×L×n product, one scaling pass) does not depend on it; the
    diagonal blocks cost L·Q·n, the block scales (L/Q)²; 16 and 32 measured best
    (benchmarks/implicit_attention_results.md, "Choices measured")."""
    return max(1, min(32, L))


def scalar_decay_attention(log_decay: Tensor, C: Tensor, B: Tensor, chunk: int | None = None) -> Tensor:
    """α [..., L, L] for a scalar decay per step: log_decay [..., L], C and B [..., L, n].

    α[t, j] = (C_t · B_j) exp(Σ_{k=j+1..t} λ_k) for j ≤ t, exactly 0 above: the SSD matrix of Mamba2
    (Dao & Gu 2024, eq. 16). Chunked (Q = `chunk` positions, default `scalar_chunk_size(L)`): for a
    query chunk a after a key chunk b the segment sum splits into Σ_{start(a)..t} + (the chunks
    between) + Σ_{j+1..end(b)}, so the block is (C_t e^{Σ_{start..t}}) · (B_j e^{Σ_{j+1..end}}) times
    one number e^{Σ_between}: all blocks come out of one matrix product of the scaled C and B, then
    one in-place pass multiplies each block by its number (0 on and above the diagonal blocks), and
    the diagonal blocks are overwritten with their exact in-chunk segment sums. Every exponent is a
    direct sum of log-decays ≤ 0 (no difference of long sums), each factor ≤ |C|, |B| or 1.
    """
    L, n = log_decay.shape[-1], max(C.shape[-1], B.shape[-1])
    lead = torch.broadcast_shapes(log_decay.shape[:-1], C.shape[:-2], B.shape[:-2])
    log_decay = log_decay.expand(*lead, L)  # [..., L]
    C, B = C.expand(*lead, L, n), B.expand(*lead, L, n)  # [..., L, n]
    Q = max(1, min(chunk or scalar_chunk_size(L), L))
    nc = -(-L // Q)
    pad = nc * Q - L
    if pad:  # padded positions: decay 1, C = B = 0, cropped at the end
        log_decay = F.pad(log_decay, (0, pad))
        C, B = (F.pad(t, (0, 0, 0, pad)) for t in (C, B))
    ld = log_decay.reshape(*lead, nc, Q)  # [..., c, q]
    C, B = C.reshape(*lead, nc, Q, n), B.reshape(*lead, nc, Q, n)  # [..., c, q, n]

    # Diagonal blocks: scores times the exact in-chunk segment sums.
    diag = (C @ B.transpose(-1, -2)) * segsum(ld).exp()  # [..., c, q, r]
    if nc == 1:
        return diag[..., 0, :L, :L]

    # Off-diagonal blocks: one product of the scaled factors, then one number per block.
    left = (C * ld.cumsum(-1).exp()[..., None]).reshape(*lead, nc * Q, n)  # [..., t, n]: C_t e^{Σ_{start..t}}
    right = (B * exclusive_suffix_sum(ld).exp()[..., None]).reshape(*lead, nc * Q, n)  # B_j e^{Σ_{j+1..end}}
    out = left @ right.transpose(-1, -2)  # [..., t, j]
    blocks = out.view(*lead, nc, Q, nc, Q)  # [..., a, q, b, r]
    between = sums_between_chunks(ld.sum(-1)).exp()  # [..., a, b]: e^{Σ_{b+1..a−1}}, 0 for a ≤ b
    blocks.mul_(between[..., :, None, :, None])
    blocks.diagonal(dim1=-4, dim2=-2).copy_(diag.movedim(-3, -1))  # view [..., q, r, c]
    return out[..., :L, :L]


def scalar_decay_work_bytes(lead: int, L: int, n: int, element: int, chunk: int | None = None) -> int:
    """Peak bytes `scalar_decay_attention` holds for `lead` maps (estimated): the L×L map and a copy
    (cropping a padded map, or spreading heads over channels), the diagonal blocks' scores, segment
    sums and exponentials, and the scaled factors."""
    Q = max(1, min(chunk or scalar_chunk_size(L), L))
    Lp = -(-L // Q) * Q
    return element * lead * (2 * Lp * Lp + 4 * Lp * Q + 6 * Lp * n)


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
