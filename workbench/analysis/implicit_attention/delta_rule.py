"""The gated delta rule as implicit attention (Yang et al. 2024, *Gated Delta Networks*; the unrolling of
Zimerman, Ali & Wolf 2024 applied to a matrix-valued state).

Per value head, with q, k, α, β held at their recorded values (gates detached) and S_t of shape
[d_k, d_v] as `workbench.adapters.qwen3_next` records it, the recurrence
S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ unrolls to

    o_t = S_tᵀ q_t = Σ_{s≤t} A[t, s] v_s + S_{−1}ᵀ R_t,
    A[t, s] = β_s k_sᵀ F_{s+1} ⋯ F_t q_t,   F_r = α_r (I − β_r k_r k_rᵀ),   R_t = F_0 ⋯ F_t q_t

(each F_r is symmetric: this is β_s k_sᵀ (∏_{r=s+1..t} F_r) q_t read in time order). Kimi's KDA decays
per key channel, D_r = diag(α_r): then F_r = (I − β_r k_r k_rᵀ) D_r is not symmetric and
A[t, s] = β_s k_sᵀ F_{s+1}ᵀ ⋯ F_tᵀ q_t; both forms take log_alpha [..., L] or [..., L, d_k]. One L×L map per
head, shared by the head's d_v channels; the initial state goes to the bias. `delta_rule_attention` computes it chunk
by chunk with the UT transform; `delta_rule_attention_naive` is the per-pair loop it is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.adapters.qwen3_next import rms_normalize
from workbench.analysis.implicit_attention.kernel import DEFAULT_CHUNK
from workbench.kernels.delta_rule import decayed, decayed_scores
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["DeltaRuleForm", "FullAttentionForm", "Qwen3Next", "delta_rule_attention", "delta_rule_attention_naive"]

DELTA_HOOKS = ("q", "k", "v", "beta", "alpha", "o", "gate", "initial_state")
ATTENTION_HOOKS = ("v", "pattern", "z", "gate", "initial_v")
DELTA_CHUNK = 64


def _check_operands(q: Tensor, k: Tensor, beta: Tensor, log_alpha: Tensor) -> None:
    if (q.shape != k.shape or q.ndim < 2 or beta.shape != q.shape[:-1]
            or log_alpha.shape not in (q.shape[:-1], q.shape)):
        raise ValueError(f"expected q and k [..., L, d_k], beta [..., L] and log_alpha [..., L] (one decay per "
                         f"step) or [..., L, d_k] (per key channel); got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"beta {tuple(beta.shape)}, log_alpha {tuple(log_alpha.shape)}")


def decay_step(log_alpha_t: Tensor, state: Tensor) -> Tensor:
    """D_t S for S [..., d_k, d_v]: log_alpha_t [...] (scalar decay) or [..., d_k] (per key channel)."""
    per_channel = log_alpha_t.ndim == state.ndim - 1
    return (log_alpha_t[..., None] if per_channel else log_alpha_t[..., None, None]).exp() * state


def delta_rule_attention(q: Tensor, k: Tensor, beta: Tensor, log_alpha: Tensor,
                         chunk: int = DELTA_CHUNK) -> tuple[Tensor, Tensor]:
    """(A [..., L, L], R [..., L, d_k]) from q, k [..., L, d_k], beta [..., L] and log_alpha [..., L] or
    [..., L, d_k] (Kimi's per-channel decay, where e^{γ} below is diagonal), chunk by chunk.

    Within a chunk (cumulative log decay γ) the new values are δ = T⁻¹ diag(β) v − W S_in with T the
    UT system; the state entering chunk n is S_n = K_n v_{<n} + M_n S_{−1}, and each chunk maps
    K_{n+1} = [G_n K_n, Λ_nᵀ T⁻¹ diag(β)], M_{n+1} = G_n M_n with G_n = e^{γ_C} I − Λ_nᵀ W.
    """
    _check_operands(q, k, beta, log_alpha)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    *lead, L, d_k = q.shape
    C = min(chunk, L)
    pad = (-L) % C
    channels = log_alpha.shape == q.shape
    if pad:  # padded steps come after every real one: they change no real row
        q, k = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q, k))
        beta = torch.nn.functional.pad(beta, (0, pad))
        log_alpha = torch.nn.functional.pad(log_alpha, (0, 0, 0, pad) if channels else (0, pad))
    Lp = L + pad
    N = Lp // C
    q, k = (x.unflatten(-2, (N, C)) for x in (q, k))  # [..., N, C, d_k]
    beta = beta.unflatten(-1, (N, C))  # [..., N, C]
    if channels:  # [..., N, C, d_k]
        gamma = log_alpha.unflatten(-2, (N, C)).cumsum(-2)
        end = gamma[..., -1:, :]  # [..., N, 1, d_k]
        decay_end = torch.diag_embed(end[..., 0, :].exp())  # diag(e^{γ_C})  [..., N, d_k, d_k]
    else:  # [..., N, C]
        gamma = log_alpha.unflatten(-1, (N, C)).cumsum(-1)
        end = gamma[..., -1:]  # [..., N, 1]
        decay_end = end.exp()[..., None] * torch.eye(d_k, dtype=q.dtype, device=q.device)  # [..., N, d_k, d_k]
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    system = eye + decayed_scores(beta[..., None] * k, k, gamma, strict=True)
    solve = partial(torch.linalg.solve_triangular, system, upper=False, unitriangular=True)
    intra = solve(torch.diag_embed(beta))  # T⁻¹ diag(β)  [..., N, C, C]
    w = solve(beta[..., None] * decayed(gamma, k))  # T⁻¹ diag(β) (e^γ ⊙ k)  [..., N, C, d_k]
    scores = decayed_scores(q, k, gamma, strict=False)  # [..., N, C, C]
    readout = decayed(gamma, q) - scores @ w  # [..., N, C, d_k]: reads the entering state
    carried = decayed(end - gamma, k)  # Λ: [..., N, C, d_k]
    grow = decay_end - carried.transpose(-1, -2) @ w  # G_n  [..., N, d_k, d_k]
    written = carried.transpose(-1, -2) @ intra  # [..., N, d_k, C]: columns of K_{n+1} for chunk n
    maps = q.new_zeros(*lead, Lp, Lp)
    keys = q.new_zeros(*lead, d_k, Lp)  # K_n, filled chunk by chunk
    M = torch.eye(d_k, dtype=q.dtype, device=q.device).expand(*lead, d_k, d_k)
    R = []
    for n in range(N):
        rows = slice(n * C, (n + 1) * C)
        maps[..., rows, rows] = scores[..., n, :, :] @ intra[..., n, :, :]
        if n:
            maps[..., rows, : n * C] = readout[..., n, :, :] @ keys[..., : n * C]
            keys[..., : n * C] = grow[..., n, :, :] @ keys[..., : n * C]
        R.append(readout[..., n, :, :] @ M)
        M = grow[..., n, :, :] @ M
        keys[..., rows] = written[..., n, :, :]
    return maps[..., :L, :L], torch.cat(R, dim=-2)[..., :L, :]


def delta_rule_attention_naive(q: Tensor, k: Tensor, beta: Tensor, log_alpha: Tensor) -> tuple[Tensor, Tensor]:
    """The unrolled recurrence pair by pair: for each query t, the product P = F_{s+1}ᵀ ⋯ F_tᵀ grown one
    factor per key s going back, A[t, s] = β_s k_sᵀ P q_t with F_rᵀ = D_r (I − β_r k_r k_rᵀ). The oracle the
    chunked form is checked and timed against."""
    _check_operands(q, k, beta, log_alpha)
    *lead, L, d_k = q.shape
    eye = torch.eye(d_k, dtype=q.dtype, device=q.device)
    maps = q.new_zeros(*lead, L, L)
    R = q.new_zeros(*lead, L, d_k)
    for t in range(L):
        P = eye.expand(*lead, d_k, d_k)
        for s in range(t, -1, -1):
            k_s = k[..., s, :]
            maps[..., t, s] = beta[..., s] * (k_s[..., None, :] @ P @ q[..., t, :, None])[..., 0, 0]
            factor = eye - beta[..., s, None, None] * k_s[..., :, None] * k_s[..., None, :]
            P = decay_step(log_alpha.select(q.ndim - 2, s), factor @ P)  # D_s (I − β_s k_s k_sᵀ) P
        R[..., t, :] = (P @ q[..., t, :, None])[..., 0]
    return maps, R


@dataclass
class DeltaRuleForm:
    """One delta-rule layer's recorded operands (b batch, H value heads, d = H·d_v channels, L)."""

    q: Tensor  # [b, H, L, d_k], the scaled query of each value head's key head
    k: Tensor  # [b, H, L, d_k]
    beta: Tensor  # [b, H, L]
    log_alpha: Tensor  # [b, H, L], or [b, H, L, d_k] for a per-channel decay (Kimi)
    state0: Tensor  # [b, H, d_k, d_v]: the initial state S_{−1}
    value: Tensor  # [b, d, L]: v, head-major channels
    output: Tensor  # [b, d, L]: o
    head_index: Tensor  # [d]: each channel's value head
    unit_index: Tensor  # [d]: each channel's position within its head (0..d_v − 1)
    value_name: str
    output_name: str
    projection: Tensor | None = None
    computed: tuple[Tensor, Tensor] | None = field(default=None, repr=False, compare=False)  # head_maps()
    n = 1

    @property
    def shape(self) -> tuple[int, int, int]:
        b, d, L = self.value.shape
        return b, d, L

    def work_bytes(self, lead: int, queries: int, chunk: int | None = DEFAULT_CHUNK) -> int:
        """Peak bytes of `core` (estimated): every head's L×L map, its chunk operands (UT system and its
        inverse, scores, about 4·L·C) and K_n, then the map spread over `lead` channel rows."""
        b, H, L, d_k = self.q.shape
        C = min(DELTA_CHUNK, L)
        pairs = L * C * d_k if self.log_alpha.shape == self.q.shape else 0  # per-channel pair decays
        heads = b * H * (L * L + 4 * L * C + 4 * L * d_k + pairs)
        return self.value.element_size() * (heads + lead * queries * L)

    def compose_bytes(self, lead: int, queries: int) -> int:
        """Peak bytes besides `core`: the picked value, output and bias rows."""
        return self.value.element_size() * lead * (3 * self.shape[2] + queries)

    def channels(self, index: Tensor) -> DeltaRuleForm:
        def pick(t: Tensor) -> Tensor:
            return t.index_select(1, index)

        return replace(self, value=pick(self.value), output=pick(self.output),
                       head_index=self.head_index.to(index.device)[index],
                       unit_index=self.unit_index.to(index.device)[index],
                       projection=None if self.projection is None else self.projection.index_select(1, index))

    def head_maps(self) -> tuple[Tensor, Tensor]:
        """(A [b, H, L, L], R [b, H, L, d_k]) of every head, computed once per form."""
        if self.computed is None:
            self.computed = delta_rule_attention(self.q, self.k, self.beta, self.log_alpha)
        return self.computed

    def core(self, queries: Tensor | None = None, chunk: int | None = DEFAULT_CHUNK) -> Tensor:
        """Each channel's head map, rows `queries` (all when None): [b, d, q, L]."""
        maps, _ = self.head_maps()
        if queries is not None:
            maps = maps[:, :, queries.to(maps.device)]
        return maps.index_select(1, self.head_index.to(maps.device))

    def bias(self) -> Tensor:
        """What the initial state adds to o: S_{−1}ᵀ R_t per channel, [b, d, L]."""
        _, R = self.head_maps()
        per_head = R @ self.state0  # [b, H, L, d_v]
        # advanced indices split by a slice go first: [d, b, L]
        return per_head[:, self.head_index, :, self.unit_index].permute(1, 0, 2)

    def compose(self, alpha: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
        return alpha, self.bias()[..., queries]

    def recur(self, value: Tensor) -> Tensor:
        """o from v by the delta rule one step at a time, q, k, α, β as recorded: the Jacobian check."""
        b, H, L, d_k = self.q.shape
        d_v = self.state0.shape[-1]
        full = value.new_zeros(b, H * d_v, L).index_copy(1, self.head_index * d_v + self.unit_index, value)
        v = full.reshape(b, H, d_v, L)
        S, outs = self.state0, []
        for t in range(L):
            k_t, q_t = self.k[:, :, t], self.q[:, :, t]  # [b, H, d_k]
            kept = decay_step(self.log_alpha[:, :, t], S)  # D_t S_{t−1}
            delta = self.beta[:, :, t, None] * (v[..., t] - (kept * k_t[..., None]).sum(-2))  # [b, H, d_v]
            S = kept + k_t[..., None] * delta[..., None, :]
            outs.append((S * q_t[..., None]).sum(-2))  # [b, H, d_v]
        o = torch.stack(outs, dim=-1).reshape(b, H * d_v, L)
        return o.index_select(1, self.head_index * d_v + self.unit_index)


@dataclass
class FullAttentionForm:
    """A full-attention layer's recorded pattern as per-channel maps (b batch, d = heads·d_head, L)."""

    pattern: Tensor  # [b, H, L, past + L]: weights on the cached keys, then on this call's
    value: Tensor  # [b, d, L]: values of each channel's key/value head
    output: Tensor  # [b, d, L]: z
    state_part: Tensor  # [b, d, L]: what the cached keys add to z
    head_index: Tensor  # [d]: each channel's query head
    value_name: str
    output_name: str
    projection: Tensor | None = None
    n = 1

    @property
    def shape(self) -> tuple[int, int, int]:
        b, d, L = self.value.shape
        return b, d, L

    def work_bytes(self, lead: int, queries: int, chunk: int | None = DEFAULT_CHUNK) -> int:
        """Peak bytes of `core`: the picked rows of every head's pattern, then spread over `lead` channel rows."""
        b, H, _, keys = self.pattern.shape
        return self.value.element_size() * (b * H * queries * keys + lead * queries * self.shape[2])

    def compose_bytes(self, lead: int, queries: int) -> int:
        return self.value.element_size() * lead * (3 * self.shape[2] + queries)

    def channels(self, index: Tensor) -> FullAttentionForm:
        def pick(t: Tensor) -> Tensor:
            return t.index_select(1, index)

        return replace(self, value=pick(self.value), output=pick(self.output), state_part=pick(self.state_part),
                       head_index=self.head_index.to(index.device)[index],
                       projection=None if self.projection is None else self.projection.index_select(1, index))

    def core(self, queries: Tensor | None = None, chunk: int | None = DEFAULT_CHUNK) -> Tensor:
        """Each channel's head pattern over this call's keys, rows `queries`: [b, d, q, L]."""
        L = self.shape[2]
        pattern = self.pattern[..., self.pattern.shape[-1] - L:]  # [b, H, L, L]
        if queries is not None:
            pattern = pattern[:, :, queries.to(pattern.device)]
        return pattern.index_select(1, self.head_index.to(pattern.device))

    def compose(self, alpha: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
        return alpha, self.state_part[..., queries]

    def recur(self, value: Tensor) -> Tensor:
        """z from v through the recorded pattern, one query at a time (not the map): the Jacobian check."""
        L = value.shape[-1]
        pattern = self.pattern[..., self.pattern.shape[-1] - L:].index_select(1, self.head_index.to(value.device))
        rows = [(pattern[:, :, t, : t + 1] * value[..., : t + 1]).sum(-1) for t in range(L)]
        return torch.stack(rows, dim=-1) + self.state_part


class Qwen3Next:
    """The gated delta-rule layers of the Qwen3-Next adapter (`HookedGatedDeltaNet`) -> `DeltaRuleForm`."""

    families = ("qwen3_next",)
    # both: v = hook_v (after the conv), output = hook_o, the delta rule between them with q, k, α, β
    # detached. The map stops before the gated RMSNorm, which mixes a head's channels nonlinearly, and
    # does not fold in the conv (v's conv shares its input with q and k, which are held fixed)
    modes = ("exact", "paper")
    channel_name = "d_inner"

    @staticmethod
    def is_recurrent(model: HookedModel, layer: int) -> bool:
        return model.layer_types[layer] == "linear_attention"

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        hooks = DELTA_HOOKS if model is None or Qwen3Next.is_recurrent(model, layer) else ATTENTION_HOOKS
        return [get_act_name(q, layer) for q in hooks]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str) -> DeltaRuleForm | FullAttentionForm:
        if not Qwen3Next.is_recurrent(model, layer):
            return Qwen3Next.attention_form(model, cache, layer)
        mixer = model.blocks[layer].mixer
        hook = partial(get_act_name, layer=layer)
        q, k = (mixer.per_value_head(cache[hook(n)]).transpose(1, 2) for n in ("q", "k"))  # [b, H, L, d_k]
        beta, alpha = (cache[hook(n)].transpose(1, 2) for n in ("beta", "alpha"))  # [b, H, L]
        v, o = cache[hook("v")], cache[hook("o")]  # [b, L, H, d_v]
        H, d_v = v.shape[2], v.shape[3]
        channels = torch.arange(H * d_v, device=v.device)
        return DeltaRuleForm(
            q=q, k=k, beta=beta, log_alpha=torch.log(alpha), state0=cache[hook("initial_state")].to(q.dtype),
            value=v.flatten(2).transpose(1, 2), output=o.flatten(2).transpose(1, 2),
            head_index=channels // d_v, unit_index=channels % d_v, value_name=hook("v"), output_name=hook("o"),
        )

    @staticmethod
    def attention_form(model: HookedModel, cache: dict, layer: int) -> FullAttentionForm:
        """A gated full-attention layer: pattern per head, values per key/value head, output z (before the gate)."""
        mixer = model.blocks[layer].mixer
        sz = mixer.sizes
        hook = partial(get_act_name, layer=layer)
        pattern = cache[hook("pattern")].permute(0, 2, 1, 3)  # [b, H, L, past + L]
        v, z = cache[hook("v")], cache[hook("z")]  # [b, L, H_kv, P], [b, L, H, P]
        H, P = sz["n_heads"], sz["d_head"]
        kv_of_head = torch.arange(H, device=v.device) // (H // sz["n_kv_heads"])
        value = v.index_select(2, kv_of_head).flatten(2).transpose(1, 2)  # [b, H·P, L]
        cached_v = cache[hook("initial_v")].index_select(1, kv_of_head).to(v.dtype)  # [b, H, past, P]
        past = cached_v.shape[2]
        state_part = pattern[..., :past] @ cached_v  # [b, H, L, P]
        b, L = v.shape[0], v.shape[1]
        return FullAttentionForm(
            pattern=pattern, value=value, output=z.flatten(2).transpose(1, 2),
            state_part=state_part.permute(0, 1, 3, 2).reshape(b, H * P, L),
            head_index=torch.arange(H * P, device=v.device) // P, value_name=hook("v") + " (per query head)",
            output_name=hook("z") + " (before the output gate)",
        )

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: Tensor, cache: dict) -> Tensor:
        """∂target/∂(output of the form), [b, d, L], from the gradient at hook_out [b, L, d_model].

        Attention layers: through W_o and the output gate. Delta-rule layers: through out_proj, then the
        per-head gated RMSNorm by autograd (its 1/rms included, the gate SiLU(z) held as recorded).
        """
        mixer = model.blocks[layer].mixer
        hook = partial(get_act_name, layer=layer)
        if not Qwen3Next.is_recurrent(model, layer):
            g = grad_out @ mixer.hf.o_proj.weight.detach().to(grad_out.dtype)  # [b, L, H·P]: ∂/∂(z ⊙ gate)
            return (g * cache[hook("gate")].flatten(2).to(g.dtype)).transpose(1, 2)
        g = grad_out @ mixer.hf.out_proj.weight.detach().to(grad_out.dtype)  # [b, L, H·d_v]: ∂/∂normed
        o = cache[hook("o")].detach().to(g.dtype).requires_grad_(True)  # [b, L, H, d_v]
        gate = cache[hook("gate")].to(g.dtype)
        norm = mixer.hf.norm
        with torch.enable_grad():
            normed = norm.weight.detach().to(g.dtype) * rms_normalize(o, norm.variance_epsilon) * gate
            (g,) = torch.autograd.grad(normed, o, g.reshape(o.shape).to(normed.dtype))
        return g.flatten(2).transpose(1, 2).to(grad_out.dtype)
