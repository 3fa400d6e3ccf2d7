"""The gated delta rule (Yang et al. 2024, *Gated Delta Networks*) in chunked form, in any float dtype.

Per head, with S_t of shape [d_k, d_v] (the orientation of `transformers` and FLA):

    S_t = α_t S_{t−1} + k_t δ_tᵀ,   δ_t = β_t (v_t − α_t S_{t−1}ᵀ k_t),   o_t = S_tᵀ q_t

Within a chunk with cumulative log decay γ_t = Σ_{r≤t} log α_r, the new values δ solve a unit
lower-triangular system (the UT transform): (I + A) δ = β v − β e^{γ} K S_0 with
A[t, s] = β_t e^{γ_t − γ_s} k_tᵀ k_s for s < t; then every state and output of the chunk is a matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def decay_matrix(gamma: Tensor, strict: bool) -> Tensor:
    """e^{γ_t − γ_s} below the diagonal (and on it unless `strict`), 0 above: [..., C] -> [..., C, C]."""
    size = gamma.shape[-1]
    above = torch.ones(size, size, dtype=torch.bool, device=gamma.device).triu(1 if not strict else 0)
    difference = gamma[..., :, None] - gamma[..., None, :]
    return difference.masked_fill(above, float("-inf")).exp()


def chunked_delta_rule(q: Tensor, k: Tensor, v: Tensor, log_alpha: Tensor, beta: Tensor, s0: Tensor,
                       chunk_size: int = 64, return_states: bool = False) -> tuple[Tensor, Tensor]:
    """q, k [B, H, L, d_k], v [B, H, L, d_v], log_alpha, beta [B, H, L], s0 [B, H, d_k, d_v]
    -> (o [B, H, L, d_v], states [B, H, L, d_k, d_v] if `return_states` else the final state [B, H, d_k, d_v]).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    length = q.shape[2]
    pad = (-length) % chunk_size
    if pad:  # padded steps have k = v = 0 and α = 1: they leave the state unchanged
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        log_alpha, beta = (F.pad(x, (0, pad)) for x in (log_alpha, beta))
    chunks = q.shape[2] // chunk_size
    q, k, v = (x.unflatten(2, (chunks, chunk_size)) for x in (q, k, v))  # [B, H, N, C, d]
    gamma = log_alpha.unflatten(2, (chunks, chunk_size)).cumsum(-1)  # [B, H, N, C]
    beta = beta.unflatten(2, (chunks, chunk_size))[..., None]  # [B, H, N, C, 1]
    inclusive = decay_matrix(gamma, strict=False)  # [B, H, N, C, C]
    system = (beta * k) @ k.transpose(-1, -2) * decay_matrix(gamma, strict=True)
    eye = torch.eye(chunk_size, dtype=q.dtype, device=q.device)
    # δ = u − w S_0 with u = (I + A)⁻¹ β v and w = (I + A)⁻¹ β e^{γ} k
    u = torch.linalg.solve_triangular(eye + system, beta * v, upper=False, unitriangular=True)
    w = torch.linalg.solve_triangular(eye + system, beta * gamma.exp()[..., None] * k, upper=False,
                                      unitriangular=True)
    scores = (q @ k.transpose(-1, -2)) * inclusive  # [B, H, N, C, C]
    state, outputs, states = s0, [], []
    for n in range(chunks):
        delta = u[:, :, n] - w[:, :, n] @ state  # [B, H, C, d_v]
        outputs.append(gamma[:, :, n].exp()[..., None] * (q[:, :, n] @ state) + scores[:, :, n] @ delta)
        if return_states:  # S_t = e^{γ_t} S_0 + Σ_{s≤t} e^{γ_t − γ_s} k_s δ_sᵀ
            weighted = (inclusive[:, :, n, :, :, None] * k[:, :, n, None]).transpose(-1, -2)  # [B, H, C, d_k, C]
            written = weighted @ delta[:, :, None]  # [B, H, C, d_k, d_v]
            states.append(gamma[:, :, n].exp()[..., None, None] * state[:, :, None] + written)
        last = (gamma[:, :, n, -1:] - gamma[:, :, n]).exp()[..., None] * k[:, :, n]  # [B, H, C, d_k]
        state = gamma[:, :, n, -1].exp()[..., None, None] * state + last.transpose(-1, -2) @ delta
    o = torch.cat(outputs, dim=2)[:, :, :length]
    if return_states:
        return o, torch.cat(states, dim=2)[:, :, :length]
    return o, state
