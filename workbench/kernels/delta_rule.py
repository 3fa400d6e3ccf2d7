"""The gated delta rule (Yang et al. 2024, *Gated Delta Networks*) in chunked form, in any float dtype,
with a scalar decay per head and step (Gated DeltaNet) or a diagonal one per key channel (Kimi's KDA).

Per head, with S_t of shape [d_k, d_v] (the orientation of `transformers` and FLA) and D_t = α_t
(a scalar) or diag(α_t) (α_t a d_k vector):

    S_t = D_t S_{t−1} + k_t δ_tᵀ,   δ_t = β_t (v_t − (D_t S_{t−1})ᵀ k_t),   o_t = S_tᵀ q_t

Within a chunk with cumulative log decay γ_t = Σ_{r≤t} log α_r, the new values δ solve a unit
lower-triangular system (the UT transform): (I + A) δ = β v − β (e^{γ} ⊙ K) S_0 with
A[t, s] = β_t Σ_i k_{t,i} k_{s,i} e^{γ_{t,i} − γ_{s,i}} for s < t; then every state and output of the chunk
is a matmul. The per-channel decay factors its scores as (x e^{γ})(y e^{−γ})ᵀ while |γ| within every chunk
stays in the dtype's range (`FACTOR_LIMIT`), else block by block (`blocked_scores`: pair decays within
16-step blocks, factors ≤ 1 across them, so nothing overflows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Largest |γ| (cumulative log decay within a chunk) for which e^{±γ} stays in the normal range of the dtype:
# below it the per-channel scores factor as (x e^{γ}) (y e^{−γ})ᵀ, one matmul instead of [C, C, d_k] products
FACTOR_LIMIT = {torch.float64: 600.0, torch.float32: 60.0, torch.bfloat16: 60.0}


def decay_matrix(gamma: Tensor, strict: bool) -> Tensor:
    """e^{γ_t − γ_s} below the diagonal (and on it unless `strict`), 0 above: [..., C] -> [..., C, C]."""
    size = gamma.shape[-1]
    above = torch.ones(size, size, dtype=torch.bool, device=gamma.device).triu(1 if not strict else 0)
    difference = gamma[..., :, None] - gamma[..., None, :]
    return difference.masked_fill(above, float("-inf")).exp()


def per_channel(gamma: Tensor, x: Tensor) -> bool:
    """Whether the cumulative log decay `gamma` has a key-channel axis ([..., C, d_k]) for x [..., C, d_k]."""
    return gamma.shape == x.shape


def decayed(gamma: Tensor, x: Tensor) -> Tensor:
    """e^{γ_t} ⊙ x_t for x [..., C, d]: the scalar decay broadcast over channels, the per-channel one elementwise."""
    return gamma.exp() * x if per_channel(gamma, x) else gamma.exp()[..., None] * x


def decayed_scores(x: Tensor, y: Tensor, gamma: Tensor, strict: bool) -> Tensor:
    """Σ_i x_{t,i} y_{s,i} e^{γ_{t,i} − γ_{s,i}} for s ≤ t (s < t if `strict`), 0 above: [..., C, C].

    x, y [..., C, d_k]; gamma [..., C] (one decay per step) or [..., C, d_k] (per channel).
    """
    if not per_channel(gamma, x):
        return (x @ y.transpose(-1, -2)) * decay_matrix(gamma, strict)
    if float(gamma.detach().abs().amax()) <= FACTOR_LIMIT.get(gamma.dtype, 8.0):
        # e^{γ_t} and e^{−γ_s} both stay in the dtype's normal range: one matmul, products exact to rounding
        scores = (x * gamma.exp()) @ (y * (-gamma).exp()).transpose(-1, -2)  # [..., C, C]
        return scores.tril(-1 if strict else 0)
    return blocked_scores(x, y, gamma, strict)


def blocked_scores(x: Tensor, y: Tensor, gamma: Tensor, strict: bool, block: int = 16) -> Tensor:
    """`decayed_scores` for any per-channel decay: within each block of `block` keys the pair decays
    [block, block, d_k]; a later query t reads key block j through its last step b as
    (x_t e^{γ_t − γ_b}) · (y_s e^{γ_b − γ_s}), both factors ≤ 1 (log α ≤ 0), so nothing overflows."""
    size = gamma.shape[-2]
    out = x.new_zeros(*x.shape[:-1], size)  # [..., C, C]
    for start in range(0, size, block):
        keys = slice(start, min(start + block, size))
        out[..., keys, keys] = (x[..., keys, None, :] * y[..., None, keys, :]
                                * pair_decays(gamma[..., keys, :], strict)).sum(-1)
        if keys.stop < size:
            rows, last = slice(keys.stop, size), gamma[..., keys.stop - 1:keys.stop, :]  # γ_b  [..., 1, d_k]
            reads = x[..., rows, :] * (gamma[..., rows, :] - last).exp()  # [..., C − stop, d_k]
            written = y[..., keys, :] * (last - gamma[..., keys, :]).exp()  # [..., block, d_k]
            out[..., rows, keys] = reads @ written.transpose(-1, -2)
    return out


def pair_decays(gamma: Tensor, strict: bool) -> Tensor:
    """e^{γ_{t,i} − γ_{s,i}} for s ≤ t, 0 above, per channel: [..., C, d_k] -> [..., C, C, d_k]."""
    size = gamma.shape[-2]
    above = torch.ones(size, size, dtype=torch.bool, device=gamma.device).triu(1 if not strict else 0)
    return (gamma[..., :, None, :] - gamma[..., None, :, :]).masked_fill(above[..., None], float("-inf")).exp()


def chunked_delta_rule(q: Tensor, k: Tensor, v: Tensor, log_alpha: Tensor, beta: Tensor, s0: Tensor,
                       chunk_size: int = 64, return_states: bool = False) -> tuple[Tensor, Tensor]:
    """q, k [B, H, L, d_k], v [B, H, L, d_v], log_alpha [B, H, L] or [B, H, L, d_k], beta [B, H, L],
    s0 [B, H, d_k, d_v] -> (o [B, H, L, d_v], states [B, H, L, d_k, d_v] if `return_states` else the final
    state [B, H, d_k, d_v]).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if log_alpha.shape not in (q.shape[:-1], q.shape):
        raise ValueError(f"log_alpha must be [B, H, L] or [B, H, L, d_k] = {tuple(q.shape)}, "
                         f"got {tuple(log_alpha.shape)}")
    channels = log_alpha.shape == q.shape
    length = q.shape[2]
    pad = (-length) % chunk_size
    if pad:  # padded steps have k = v = 0 and α = 1: they leave the state unchanged
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        log_alpha = F.pad(log_alpha, (0, 0, 0, pad) if channels else (0, pad))
        beta = F.pad(beta, (0, pad))
    chunks = q.shape[2] // chunk_size
    q, k, v = (x.unflatten(2, (chunks, chunk_size)) for x in (q, k, v))  # [B, H, N, C, d]
    gamma = log_alpha.unflatten(2, (chunks, chunk_size)).cumsum(3)  # [B, H, N, C] or [B, H, N, C, d_k]
    beta = beta.unflatten(2, (chunks, chunk_size))[..., None]  # [B, H, N, C, 1]
    system = decayed_scores(beta * k, k, gamma, strict=True)  # [B, H, N, C, C]
    eye = torch.eye(chunk_size, dtype=q.dtype, device=q.device)
    # δ = u − w S_0 with u = (I + A)⁻¹ β v and w = (I + A)⁻¹ β (e^{γ} ⊙ k)
    u = torch.linalg.solve_triangular(eye + system, beta * v, upper=False, unitriangular=True)
    w = torch.linalg.solve_triangular(eye + system, beta * decayed(gamma, k), upper=False, unitriangular=True)
    scores = decayed_scores(q, k, gamma, strict=False)  # [B, H, N, C, C]
    read = decayed(gamma, q)  # e^{γ_t} ⊙ q_t  [B, H, N, C, d_k]
    end = gamma[:, :, :, -1:]  # [B, H, N, 1] or [B, H, N, 1, d_k]
    carried = decayed(end - gamma, k)  # e^{γ_C − γ_s} ⊙ k_s  [B, H, N, C, d_k]
    keep = (end.exp()[..., 0, :, None] if channels else end.exp()[..., None])  # [B, H, N, d_k or 1, 1]
    # Every state, three ways. Without autograd: S_t = D_t S_{t−1} + k_t δ_tᵀ stepped in place through one
    # buffer laid out [B, L, H, d_k, d_v] as the hooks hold it, after the chunks gave every δ_t: L·d_k·d_v
    # work, what writing the states costs, exact for any decay. With autograd: one cumulative sum,
    # S_t = e^{γ_t} ⊙ (S_0 + Σ_{s≤t} (e^{−γ_s} ⊙ k_s) δ_sᵀ), where e^{±γ} stay in the dtype's normal range,
    # else the pairwise decays (C times the work).
    stepped = return_states and not (torch.is_grad_enabled() and any(
        x.requires_grad for x in (q, k, v, log_alpha, beta, s0)))
    factored = return_states and not stepped and float(gamma.detach().abs().amax()) <= FACTOR_LIMIT.get(
        gamma.dtype, 8.0)
    state, outputs, states, deltas = s0, [], [], []
    for n in range(chunks):
        delta = u[:, :, n] - w[:, :, n] @ state  # [B, H, C, d_v]
        outputs.append(read[:, :, n] @ state + scores[:, :, n] @ delta)
        if stepped:
            deltas.append(delta)
        elif factored:
            written = (decayed(-gamma[:, :, n], k[:, :, n])[..., None] * delta[..., None, :]).cumsum(2)
            grow = gamma[:, :, n].exp()[..., None] if channels else gamma[:, :, n].exp()[..., None, None]
            states.append(grow * (state[:, :, None] + written))  # [B, H, C, d_k, d_v]
        elif return_states:  # S_t = e^{γ_t} ⊙ S_0 + Σ_{s≤t} (e^{γ_t − γ_s} ⊙ k_s) δ_sᵀ
            if channels:
                weighted = (pair_decays(gamma[:, :, n], strict=False) * k[:, :, n, None]).transpose(-1, -2)
                start = gamma[:, :, n].exp()[..., None] * state[:, :, None]  # [B, H, C, d_k, d_v]
            else:
                inclusive = decay_matrix(gamma[:, :, n], strict=False)  # [B, H, C, C]
                weighted = (inclusive[..., None] * k[:, :, n, None]).transpose(-1, -2)  # [B, H, C, d_k, C]
                start = gamma[:, :, n].exp()[..., None, None] * state[:, :, None]
            states.append(start + weighted @ delta[:, :, None])  # [B, H, C, d_k, d_v]
        state = keep[:, :, n] * state + carried[:, :, n].transpose(-1, -2) @ delta
    if stepped:
        o = torch.cat(outputs, dim=2)[:, :, :length]
        return o, stepped_states(k.flatten(2, 3)[:, :, :length], torch.cat(deltas, dim=2)[:, :, :length],
                                 log_alpha[:, :, :length], s0)
    o = torch.cat(outputs, dim=2)[:, :, :length]
    if return_states:
        return o, torch.cat(states, dim=2)[:, :, :length]
    return o, state


def stepped_states(k: Tensor, delta: Tensor, log_alpha: Tensor, s0: Tensor) -> Tensor:
    """Every S_t = D_t S_{t−1} + k_t δ_tᵀ from S_{−1} = s0, written in place into one buffer
    [B, L, H, d_k, d_v] (returned as its [B, H, L, d_k, d_v] view): k [B, H, L, d_k], δ [B, H, L, d_v],
    log α [B, H, L] (D_t = α_t I) or [B, H, L, d_k] (D_t = diag α_t). No product of decays is formed,
    so any decay is exact."""
    batch, heads, length, d_k = k.shape
    buffer = k.new_empty(batch, length, heads, d_k, delta.shape[-1])  # [B, L, H, d_k, d_v]
    torch.mul(k.transpose(1, 2)[..., None], delta.transpose(1, 2)[..., None, :], out=buffer)  # k_t δ_tᵀ
    alpha = log_alpha.exp().transpose(1, 2)  # [B, L, H] or [B, L, H, d_k]
    alpha = alpha[..., None] if alpha.ndim == 4 else alpha[..., None, None]  # [B, L, H, d_k or 1, 1]
    previous = s0
    for t in range(length):
        previous = torch.addcmul(buffer[:, t], alpha[:, t], previous, out=buffer[:, t])
    return buffer.transpose(1, 2)
