"""Griffin / RecurrentGemma as implicit attention (De et al. 2024; Zimerman, Ali & Wolf 2024, eq. 12).

RG-LRU blocks of the `transformers` adapter (`workbench.adapters.recurrent_gemma`), per channel:
h_t = a_t h_{t−1} + sqrt(1 − a_t²) i_t u_t with u = conv(x), so with the gates a, i held fixed

    α_{t,j} = sqrt(1 − a_j²) i_j ∏_{k=j+1..t} a_k,

a scalar decay per channel (log a_t = −8 r_t softplus(Λ), recomputed from the recorded r exactly as
the layer forms it; a_t = 0, log a_t = −inf, at a text's absolute position 0, where the factor
sqrt(1 − a²) is 1). Modes:

- "exact": v = x (the recurrent branch before the conv). The map folds in the causal conv (bias and
  initial conv state to the bias term), the key-side gate sqrt(1 − a_j²) i_j and the GeLU branch
  g_t on the query side: Ã v + bias = h ⊙ g, the input of linear_out.
- "paper": the RG-LRU alone, v = u (after the conv), Ã v + bias = h.

Local-attention blocks (every third block in Griffin) are attention already: `LocalAttentionForm`
scatters the recorded softmax pattern [pos, heads, window] into a causal L×L map per head, shared
by the head's d_head channels, with value v (the key/value head's values) and output z; keys kept
from an earlier call (the initial state) go to the bias. So rollout and attribution run across
every block of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.analysis.implicit_attention.form import LinearForm
from workbench.analysis.implicit_attention.kernel import DEFAULT_CHUNK
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["LocalAttentionForm", "RecurrentGemma"]

RG_LRU_HOOKS = ("x", "conv", "r", "i", "h", "gate", "initial_conv", "initial_h", "initial_position")
ATTENTION_HOOKS = ("v", "pattern", "z", "initial_v", "initial_position")
RECURRENCE_SCALE = 8.0  # c in log a_t = −c r_t softplus(Λ) (De et al. 2024, eq. 4)


@dataclass
class LocalAttentionForm:
    """A local-attention block's recorded pattern as per-channel maps (b batch, d = heads·d_head, L)."""

    pattern: Tensor  # [b, H, L, window]: slot s of query t is key t − (window − 1) + s
    value: Tensor  # [b, d, L]: values of each channel's key/value head
    output: Tensor  # [b, d, L]: z
    state_part: Tensor  # [b, d, L]: what keys from the initial state add to z
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
        """Peak bytes of `core` for `lead` = batch × channels maps: the rows of every head's pattern
        (masked), every head's scattered map and its cropped copy (`index_select` reads a contiguous
        one), and the map spread over the channels."""
        b, H, L, window = self.pattern.shape
        heads = b * H * queries * (2 * window + 2 * (L + window - 1))
        return self.value.element_size() * (heads + lead * queries * L)

    def compose_bytes(self, lead: int, queries: int) -> int:
        """Peak bytes a chunk of `lead` maps needs besides `core`'s: its value, output and state part
        picked out of the form, and the bias rows."""
        return self.value.element_size() * lead * (3 * self.shape[2] + queries)

    def channels(self, index: Tensor) -> LocalAttentionForm:
        def pick(t: Tensor) -> Tensor:
            return t.index_select(1, index)

        return replace(self, value=pick(self.value), output=pick(self.output), state_part=pick(self.state_part),
                       head_index=self.head_index.to(index.device)[index],
                       projection=None if self.projection is None else self.projection.index_select(1, index))

    def core(self, queries: Tensor | None = None, chunk: int | None = DEFAULT_CHUNK) -> Tensor:
        """The pattern of each channel's head scattered into [b, d, q, L] (zero outside the window)."""
        b, H, L, window = self.pattern.shape
        rows = torch.arange(L, device=self.pattern.device) if queries is None else queries.to(self.pattern.device)
        key = rows[:, None] - (window - 1) + torch.arange(window, device=rows.device)  # [q, window]
        inside = key >= 0  # keys of this call (the rest came from the initial state: bias)
        pattern = self.pattern[:, :, rows] * inside  # [b, H, q, window]
        full = pattern.new_zeros(b, H, len(rows), L + window - 1)
        full.scatter_(-1, (key + window - 1).expand(b, H, -1, -1), pattern)  # column j + window − 1
        return full[..., window - 1:].index_select(1, self.head_index.to(full.device))  # [b, d, q, L]

    def compose(self, alpha: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
        return alpha, self.state_part[..., queries]

    def recur(self, value: Tensor) -> Tensor:
        """z from v through the recorded pattern, slot by slot (not the map): the Jacobian check."""
        b, H, L, window = self.pattern.shape
        pattern = self.pattern.index_select(1, self.head_index.to(value.device))  # [b, d, L, window]
        padded = F.pad(value, (window - 1, 0))  # [b, d, L + window − 1]: zeros for the state's keys
        out = sum(pattern[..., s] * padded[..., s : s + L] for s in range(window))
        return out + self.state_part


class RecurrentGemma:
    """RecurrentGemma (Griffin) of the `transformers` adapter: RG-LRU blocks and local attention."""

    families = ("recurrent_gemma",)
    modes = ("exact", "paper")
    channel_name = "d_lru"

    @staticmethod
    def is_recurrent(model: HookedModel, layer: int) -> bool:
        return model.block_types[layer] == "linear_attention"

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        hooks = RG_LRU_HOOKS if model is None or RecurrentGemma.is_recurrent(model, layer) else ATTENTION_HOOKS
        return [get_act_name(q, layer) for q in hooks]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str) -> LinearForm | LocalAttentionForm:
        if not RecurrentGemma.is_recurrent(model, layer):
            return RecurrentGemma.attention_form(model, cache, layer)
        mixer = model.blocks[layer].mixer
        hf, lru = mixer.hf, mixer.hf.rg_lru
        hook = partial(get_act_name, layer=layer)
        x, u, r, i, h, gate = (cache[hook(q)].transpose(1, 2) for q in ("x", "conv", "r", "i", "h", "gate"))
        b, d, L = x.shape
        position = cache[hook("initial_position")].round().long()[:, None] + torch.arange(L, device=x.device)
        start = (position == 0)[:, None, :]  # [b, 1, L]: the reset
        log_a = -RECURRENCE_SCALE * r * F.softplus(lru.recurrent_param.detach().to(r.dtype))[None, :, None]
        factor = torch.where(start, torch.ones_like(log_a), torch.sqrt(1 - torch.exp(2 * log_a)))  # [b, d, L]
        log_decay = torch.where(start, torch.full_like(log_a, -torch.inf), log_a)[..., None]  # [b, d, L, 1]
        ones = torch.ones_like(log_decay[:, :1, :1])  # [b, 1, 1, 1]: C = B = 1, one state per channel
        common = {"initial_state": cache[hook("initial_h")][..., None]}  # [b, d, 1]
        if mode == "paper":
            return LinearForm(log_decay, ones, ones, value=u, output=h, value_name=hook("conv"), output_name=hook("h"),
                              col_scale=factor * i, **common)
        weight = hf.conv_1d.weight.detach().to(x.dtype)[:, 0, :]  # [d, k]
        bias = None if hf.conv_1d.bias is None else hf.conv_1d.bias.detach().to(x.dtype)
        conv_state = cache[hook("initial_conv")]  # [b, d, k−1]
        start_only = torch.cat([conv_state, torch.zeros_like(x)], dim=-1)
        offset = F.conv1d(start_only, weight[:, None, :], bias, groups=d)  # [b, d, L]
        return LinearForm(
            log_decay, ones, ones, value=x, output=h * gate, value_name=hook("x"),
            output_name=f"{hook('h')} ⊙ {hook('gate')} (input of linear_out)", col_scale=factor * i, row_scale=gate,
            conv_weight=weight, conv_offset=offset, projection=hf.linear_out.weight.detach().to(x.dtype), **common,
        )

    @staticmethod
    def attention_form(model: HookedModel, cache: dict, layer: int) -> LocalAttentionForm:
        """A local-attention block: pattern per head, values per key/value head, output z."""
        mixer = model.blocks[layer].mixer
        sz = mixer.sizes
        hook = partial(get_act_name, layer=layer)
        pattern = cache[hook("pattern")].permute(0, 2, 1, 3)  # [b, H, L, window]
        v, z = cache[hook("v")], cache[hook("z")]  # [b, L, Hkv, P], [b, L, H, P]
        H, P, window = sz["n_heads"], sz["d_head"], sz["window"]
        kv_of_head = torch.arange(H, device=v.device) // (H // sz["n_kv_heads"])
        value = v.index_select(2, kv_of_head).flatten(2).transpose(1, 2)  # [b, H·P, L]
        state_v = cache[hook("initial_v")].index_select(1, kv_of_head)  # [b, H, window − 1, P]
        # keys from the initial state: slot s of query t with t − (window − 1) + s < 0 reads state slot t + s
        b, L = pattern.shape[0], pattern.shape[2]
        slots = torch.arange(L, device=v.device)[:, None] + torch.arange(window, device=v.device)  # [L, window]
        from_state = slots < window - 1
        gathered = state_v[:, :, slots.clamp(max=window - 2)]  # [b, H, L, window, P]
        state_part = ((pattern * from_state)[..., None] * gathered).sum(-2)  # [b, H, L, P]
        return LocalAttentionForm(
            pattern=pattern, value=value, output=z.flatten(2).transpose(1, 2),
            state_part=state_part.permute(0, 1, 3, 2).reshape(b, H * P, L),
            head_index=torch.arange(H * P, device=v.device) // P, value_name=hook("v") + " (per query head)",
            output_name=hook("z"), projection=mixer.hf.o_proj.weight.detach().to(v.dtype),
        )

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: Tensor, cache: dict) -> Tensor:
        """∂target/∂(output of the form), [b, d, L]: through linear_out (exact), and the gate (paper)."""
        mixer = model.blocks[layer].mixer
        if not RecurrentGemma.is_recurrent(model, layer):
            return (grad_out @ mixer.hf.o_proj.weight.detach().to(grad_out.dtype)).transpose(1, 2)
        g = grad_out @ mixer.hf.linear_out.weight.detach().to(grad_out.dtype)  # [b, L, d]: ∂/∂(h ⊙ gate)
        if mode == "paper":
            g = g * cache[get_act_name("gate", layer)]  # ∂/∂h
        return g.transpose(1, 2)
