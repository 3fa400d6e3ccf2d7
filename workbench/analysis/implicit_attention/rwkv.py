"""RWKV-4 time mixing as implicit attention (Peng et al. 2023; Zimerman, Ali & Wolf 2024, section 3).

Per channel, RWKV-4's WKV is a ratio: with a_{t−1} = Σ_{j<t} e^{k_j − Σ_{m=j+1..t−1} w_m} v_j (plus
the initial state) and D_t the same sum over 1 in place of v_j, plus the bonus term,

    wkv_t = (a_{t−1} + e^{u + k_t} v_t) / D_t,    D_t = b_{t−1} + e^{u + k_t},

and the layer writes r_t ⊙ wkv_t into out_proj. D_t depends on the keys and decays only, never on
v, so the layer's output is exactly linear in v:

    Ã_{t,j} = r_t e^{k_j − Σ_{m=j+1..t−1} w_m − log D_t}   (j < t),
    Ã_{t,t} = r_t e^{u + k_t − log D_t},

and Ã v + bias = r ⊙ wkv, the input of the output projection, with bias_t = r_t e^{max_{−1} −
Σ_{m<t} w_m − log D_t} num_{−1} from the initial state. Ã is the layer's own Jacobian ∂(r⊙wkv)/∂v
(receptance, keys and denominators do not depend on v). log D_t comes from the recorded stable
state (num, den, max) as the library's CPU path defines it. `wkv_attention` computes the map chunk by
chunk of positions: inside a chunk each entry is one exponential of a direct sum; across chunks an
entry is a query factor times a key factor, each the exponential of direct sums shifted by the
chunk's largest key (both ≤ 1 for the layer's own denominators), so nothing overflows where the
layer itself does not.

`WKVForm` has the methods of `LinearForm` that `api.attend` uses (`channels`, `core`, `compose`,
`work_bytes`, `recur`), computing its map in log space instead of through the decay kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.analysis.implicit_attention.kernel import (
    DEFAULT_CHUNK,
    exclusive_suffix_sum,
    scalar_chunk_size,
    segsum,
    sums_between_chunks,
)
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["RWKV", "WKVForm", "wkv_attention", "wkv_attention_naive", "wkv_attention_row"]

HOOKS = ("r", "k", "v", "w", "wkv", "den", "max", "initial_num", "initial_den", "initial_max")


def _wkv_block(k: Tensor, w: Tensor, u: Tensor, log_den: Tensor, r: Tensor) -> Tensor:
    """Ã [..., T, T] computed directly (segment sums of −w over an T×T tensor): the diagonal blocks
    of `wkv_attention`, where T is one chunk."""
    T = k.shape[-1]
    decay = segsum(-w)  # [..., t, j]: −Σ_{m=j+1..t} w_m, −inf above
    logits = torch.cat([torch.full_like(decay[..., :1, :], -torch.inf), decay[..., :-1, :]], dim=-2)
    logits = logits + k[..., None, :]  # row t: k_j − Σ_{m=j+1..t−1} w_m for j < t
    index = torch.arange(T, device=k.device)
    logits[..., index, index] = u + k  # the bonus on the current token
    return r[..., :, None] * torch.exp(logits - log_den[..., :, None])


def wkv_attention(k: Tensor, w: Tensor, u: Tensor, log_den: Tensor, r: Tensor,
                  chunk: int | None = None) -> Tensor:
    """Ã [..., L, L] from k, w, u, log D, r [..., L] (see module); exactly 0 above the diagonal.

    Chunked over positions (Q = `chunk`, default `kernel.scalar_chunk_size(L)`), as Mamba2's SSD
    matrix is: for a query t in chunk a and a key j in an earlier chunk b the exponent splits into
    q_t = −log D_t − Σ_{m=start(a)..t−1} w_m, the whole chunks between, and κ_j = k_j − Σ_{m=j+1..end(b)}
    w_m. Shifting by the chunk's largest key, μ_b = max_{j∈b} κ_j, each block is an outer product
    r_t e^{q_t + between + μ_b} · e^{κ_j − μ_b}: the key factor is ≤ 1 (no overflow where e^k would),
    and the query factor is the block row's largest entry, ≤ 1 whenever D_t holds the keys it
    weighs (the layer's own denominators). The diagonal blocks come from the direct form, exactly.
    """
    k, w, u, log_den, r = torch.broadcast_tensors(k, w, u, log_den, r)
    lead, L = k.shape[:-1], k.shape[-1]
    Q = max(1, min(chunk or scalar_chunk_size(L), L))
    nc = -(-L // Q)
    if nc == 1:
        return _wkv_block(k, w, u, log_den, r)
    pad = nc * Q - L
    if pad:  # padded keys: k = −inf (weight 0, never the chunk's maximum); cropped at the end
        k = F.pad(k, (0, pad), value=-torch.inf)
        w, u, log_den, r = (F.pad(x, (0, pad)) for x in (w, u, log_den, r))
    k, w, u, log_den, r = (x.reshape(*lead, nc, Q) for x in (k, w, u, log_den, r))  # [..., c, q]
    diag = _wkv_block(k, w, u, log_den, r)  # [..., c, q, r]

    # The large terms (k_j, μ_b, log D_t, each up to |k|) are differenced first, where they nearly
    # cancel, and the decay sums added after: fewer float32 roundings at |k| than the direct form.
    to_end = exclusive_suffix_sum(w)  # [..., b, r]: Σ_{m=j+1..end(b)} w_m
    top = (k - to_end).amax(-1).nan_to_num(neginf=0.0)  # [..., b]: μ_b (0 for a chunk of k = −inf)
    col = torch.exp((k - top[..., None]) - to_end)  # [..., b, r]: e^{κ_j − μ_b}
    from_start = F.pad(w.cumsum(-1)[..., :-1], (1, 0))  # [..., a, q]: Σ_{m=start(a)..t−1} w_m
    between = sums_between_chunks(-w.sum(-1))  # [..., a, b]: −Σ of the whole chunks between, −inf for a ≤ b
    row = (top[..., None, None, :] - log_den[..., None]) - from_start[..., None]  # [..., a, q, b]
    row = torch.exp(row + between[..., :, None, :]) * r[..., None]  # r_t e^{q_t + between + μ_b}
    out = torch.empty(*lead, nc * Q, nc * Q, dtype=diag.dtype, device=diag.device)  # [..., t, j]
    blocks = out.view(*lead, nc, Q, nc, Q)  # [..., a, q, b, r]
    torch.mul(row[..., None], col[..., None, None, :, :], out=blocks)
    blocks.diagonal(dim1=-4, dim2=-2).copy_(diag.movedim(-3, -1))  # view [..., q, r, c]
    return out[..., :L, :L]


def wkv_attention_row(k: Tensor, w: Tensor, u: Tensor, log_den: Tensor, r: Tensor, t: int) -> Tensor:
    """Row t of `wkv_attention`, [..., L] (zeros after t), in O(L)."""
    L = k.shape[-1]
    if not 0 <= t < L:
        raise IndexError(f"query position {t} out of range for {L} positions")
    to_prev = (-w[..., :t]).flip(-1).cumsum(-1).flip(-1)  # [..., j]: −Σ_{m=j..t−1} w_m
    excl = torch.cat([to_prev[..., 1:], torch.zeros_like(to_prev[..., :1])], -1)  # −Σ_{m=j+1..t−1}
    logits = torch.cat([k[..., :t] + excl, (u + k)[..., t : t + 1]], -1) - log_den[..., t : t + 1]
    return F.pad(r[..., t : t + 1] * torch.exp(logits), (0, L - t - 1))


def wkv_attention_naive(k: Tensor, w: Tensor, u: Tensor, log_den: Tensor, r: Tensor) -> Tensor:
    """The O(L³) loop over (t, j) with the decay product over m: the oracle to beat."""
    L = k.shape[-1]
    out = k.new_zeros(*k.shape, L)
    for t in range(L):
        for j in range(t):
            decay = torch.exp(-w[..., j + 1 : t]).prod(-1)
            out[..., t, j] = r[..., t] * torch.exp(k[..., j] - log_den[..., t]) * decay
        out[..., t, t] = r[..., t] * torch.exp(u[..., t] + k[..., t] - log_den[..., t])
    return out


@dataclass
class WKVForm:
    """One RWKV-4 layer's recorded operands (b batch, d channels, L positions), every tensor [b, d, L]
    unless noted."""

    k: Tensor  # keys
    w: Tensor  # decay w = e^{time_decay} at each step
    u: Tensor  # bonus (time_first), broadcast over positions
    r: Tensor  # receptance σ(·)
    log_den: Tensor  # log D_t, the denominator of wkv_t
    max_after: Tensor  # the stable form's exponent after each step (recorded)
    num0: Tensor  # [b, d]: initial numerator state
    max0: Tensor  # [b, d]: initial exponent
    value: Tensor  # v
    output: Tensor  # r ⊙ wkv
    value_name: str
    output_name: str
    projection: Tensor | None = None  # [d_model, d]: the output projection W_o

    @property
    def shape(self) -> tuple[int, int, int]:
        b, d, L = self.value.shape
        return b, d, L

    n = 1  # one state entry per channel (for the memory estimate's defaults)

    def work_bytes(self, lead: int, queries: int, chunk: int | None = DEFAULT_CHUNK) -> int:
        """Peak bytes of `core` for `lead` maps (estimated): for rows, the cumulative sums, logits and
        their exp; for the full map, the padded map (cropped as a view, not a copy), the diagonal
        blocks' segment sums, logits and exp, and the block factors."""
        L = self.shape[2]
        if queries != L:
            return self.value.element_size() * lead * queries * L * 4
        Q = max(1, min(chunk or scalar_chunk_size(L), L))
        Lp = -(-L // Q) * Q
        return self.value.element_size() * lead * (Lp * Lp + 6 * Lp * Q + 2 * Lp * (Lp // Q) + 12 * Lp)

    def compose_bytes(self, lead: int, queries: int) -> int:
        """Peak bytes a chunk of `lead` maps needs besides `core`'s (estimated): its operands picked
        out of the form (k, w, u, r, log D, max, value, output) and `bias`'s temporaries."""
        L = self.shape[2]
        return self.value.element_size() * lead * (8 * L + 2 + 5 * L + queries)

    def channels(self, index: Tensor) -> WKVForm:
        def pick(t: Tensor) -> Tensor:
            return t if t.shape[1] == 1 else t.index_select(1, index)

        names = ("k", "w", "u", "r", "log_den", "max_after", "num0", "max0", "value", "output")
        picked: dict[str, Any] = {name: pick(getattr(self, name)) for name in names}
        picked["projection"] = None if self.projection is None else self.projection.index_select(1, index)
        return replace(self, **picked)

    def core(self, queries: Tensor | None = None, chunk: int | None = DEFAULT_CHUNK) -> Tensor:
        """Ã restricted to rows `queries` (all when None): [b, d, q, L]."""
        args = (self.k, self.w, self.u.expand_as(self.k), self.log_den, self.r)
        if queries is None:
            return wkv_attention(*args, chunk=chunk)
        return torch.stack([wkv_attention_row(*args, int(t)) for t in queries], dim=-2)

    def bias(self) -> Tensor:
        """What the initial state adds: r_t e^{max_{−1} − Σ_{m<t} w_m − log D_t} num_{−1}, [b, d, L]."""
        before = F.pad(self.w.cumsum(-1)[..., :-1], (1, 0))  # Σ_{m<t} w_m
        return self.r * self.num0[..., None] * torch.exp(self.max0[..., None] - before - self.log_den)

    def compose(self, alpha: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
        """(Ã, bias) for rows `queries`: the map is complete as `core` returns it."""
        return alpha, self.bias()[..., queries]

    def recur(self, value: Tensor) -> Tensor:
        """The layer step by step in the library's stable form, denominators and exponents as recorded:
        r ⊙ wkv [b, d, L] from v. A loop, not the map, so its autograd Jacobian checks Ã."""
        num, m_prev = self.num0, self.max0  # [b, d]
        u = self.u.expand_as(self.k)
        ys = []
        for t in range(value.shape[-1]):
            k, w, v = self.k[..., t], self.w[..., t], value[..., t]
            q = torch.maximum(m_prev, u[..., t] + k)
            den = torch.exp(self.log_den[..., t] - q)  # e^{m−q} den_{t−1} + e^{u+k−q}, recorded
            ys.append(self.r[..., t] * (torch.exp(m_prev - q) * num + torch.exp(u[..., t] + k - q) * v) / den)
            m = self.max_after[..., t]
            num = torch.exp(m_prev - w - m) * num + torch.exp(k - m) * v
            m_prev = m
        return torch.stack(ys, dim=-1)


class RWKV:
    """RWKV-4 time mixing of the `transformers` adapter (`HookedRwkvTimeMix`) -> `WKVForm`."""

    families = ("rwkv",)
    modes = ("exact",)  # the map is the layer's own Jacobian: nothing to hold fixed or drop
    channel_name = "d_att"

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        return [get_act_name(q, layer) for q in HOOKS]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str) -> WKVForm:
        """The layer's operands from the cache; log D_t from the state before each step."""
        mixer = model.blocks[layer].mixer
        hook = partial(get_act_name, layer=layer)
        k, w, r, v, wkv, den, mx = (cache[hook(q)].transpose(1, 2) for q in ("k", "w", "r", "v", "wkv", "den", "max"))
        den0, max0, num0 = (cache[hook(f"initial_{q}")] for q in ("den", "max", "num"))  # [b, d]
        den_prev = torch.cat([den0[..., None], den[..., :-1]], dim=-1)  # [b, d, L]: state before t
        max_prev = torch.cat([max0[..., None], mx[..., :-1]], dim=-1)
        u = mixer.hf.time_first.detach().to(k.dtype)[None, :, None]  # [1, d, 1]
        q = torch.maximum(max_prev, u + k)
        log_den = q + torch.log(torch.exp(max_prev - q) * den_prev + torch.exp(u + k - q))  # [b, d, L]
        return WKVForm(
            k=k, w=w, u=u.expand(k.shape[0], -1, 1), r=r, log_den=log_den, max_after=mx, num0=num0,
            max0=max0, value=v, output=r * wkv, value_name=hook("v"),
            output_name=f"{hook('r')} ⊙ {hook('wkv')} (input of W_o)",
            projection=mixer.hf.output.weight.detach().to(k.dtype),
        )

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: Tensor, cache: dict) -> Tensor:
        """∂target/∂(r ⊙ wkv), [b, d, L], through the output projection W_o."""
        weight = model.blocks[layer].mixer.hf.output.weight.detach().to(grad_out.dtype)
        return (grad_out @ weight).transpose(1, 2)
