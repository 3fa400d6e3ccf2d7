"""LFM2's gated short convolution as implicit attention, exact: y_t = Σ_{s=t−L+1..t} C_t w_{t−s} B_s x_s + bias_t.

With the gates B (input) and C (output) held at their recorded values, the layer is linear in x: per
channel the map is α[t, s] = C_t · w_{L−1−(t−s)} · B_s for 0 ≤ t − s < L and zero elsewhere (a band of
width L), and the bias is C_t times the conv bias plus what the initial window S_{−1} adds. The map is
the layer itself, not an approximation; the attention layers are their own patterns (`hybrid.attention_form`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.analysis.implicit_attention.delta_rule import FullAttentionForm
from workbench.analysis.implicit_attention.hybrid import attention_form
from workbench.analysis.implicit_attention.kernel import DEFAULT_CHUNK
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["Lfm2", "ShortConvForm"]

CONV_HOOKS = ("B", "C", "x", "y", "initial_state")
ATTENTION_HOOKS = ("v", "pattern", "z", "initial_v")


@dataclass
class ShortConvForm:
    """A gated short convolution as per-channel banded maps (b batch, d channels, L positions)."""

    B: Tensor  # [b, d, L] input gate
    C: Tensor  # [b, d, L] output gate
    weight: Tensor  # [d, k] conv taps, oldest input first
    value: Tensor  # [b, d, L] x
    output: Tensor  # [b, d, L] y = C ⊙ conv(B ⊙ x)
    bias_part: Tensor  # [b, d, L] C ⊙ (conv bias + the initial window's share)
    value_name: str
    output_name: str
    projection: Tensor | None = None
    n = 1

    @property
    def shape(self) -> tuple[int, int, int]:
        b, d, L = self.value.shape
        return b, d, L

    def work_bytes(self, lead: int, queries: int, chunk: int | None = DEFAULT_CHUNK) -> int:
        """Peak bytes of `core`: the maps of `lead` channel rows."""
        return self.value.element_size() * lead * queries * self.shape[2]

    def compose_bytes(self, lead: int, queries: int) -> int:
        return self.value.element_size() * lead * (3 * self.shape[2] + queries)

    def channels(self, index: Tensor) -> ShortConvForm:
        def pick(t: Tensor) -> Tensor:
            return t.index_select(1, index)

        return replace(self, B=pick(self.B), C=pick(self.C), weight=self.weight.index_select(0, index),
                       value=pick(self.value), output=pick(self.output), bias_part=pick(self.bias_part),
                       projection=None if self.projection is None else self.projection.index_select(1, index))

    def core(self, queries: Tensor | None = None, chunk: int | None = DEFAULT_CHUNK) -> Tensor:
        """α[b, d, t, s] = C_t w_{k−1−(t−s)} B_s on the band 0 ≤ t − s < k, rows `queries`: [b, d, q, L]."""
        b, d, L = self.shape
        k = self.weight.shape[1]
        rows = torch.arange(L, device=self.value.device) if queries is None else queries.to(self.value.device)
        maps = self.value.new_zeros(b, d, len(rows), L)
        picked = torch.arange(len(rows), device=rows.device)
        for lag in range(min(k, L)):
            keep = rows >= lag
            t, s = rows[keep], rows[keep] - lag
            maps[:, :, picked[keep], s] = self.C[..., t] * self.weight[:, k - 1 - lag, None] * self.B[..., s]
        return maps

    def compose(self, alpha: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
        return alpha, self.bias_part[..., queries]

    def recur(self, value: Tensor) -> Tensor:
        """y from x through the conv, gates held (not the map): the Jacobian check."""
        k = self.weight.shape[1]
        v = F.pad(self.B * value, (k - 1, 0))  # [b, d, k−1+L]
        conv = F.conv1d(v, self.weight[:, None, :], groups=self.weight.shape[0])
        return self.C * conv + self.bias_part


class Lfm2:
    """LFM2 -> per layer, the exact banded map of its short convolution or its attention pattern."""

    families = ("lfm2",)
    modes = ("exact",)  # v = x with both gates held; nothing to drop for a "paper" mode
    channel_name = "d_model"

    @staticmethod
    def is_recurrent(model: HookedModel, layer: int) -> bool:
        return layer in model.recurrent_layers

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        hooks = CONV_HOOKS if model is None or Lfm2.is_recurrent(model, layer) else ATTENTION_HOOKS
        return [get_act_name(q, layer) for q in hooks]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str) -> ShortConvForm | FullAttentionForm:
        if not Lfm2.is_recurrent(model, layer):
            return attention_form(model, cache, layer)
        conv = model.blocks[layer].mixer.hf.conv
        hook = partial(get_act_name, layer=layer)
        B, C, x, y = (cache[hook(q)].transpose(1, 2) for q in ("B", "C", "x", "y"))  # [b, d, L]
        weight = conv.weight.detach().to(x.dtype)[:, 0, :]  # [d, k]
        bias = None if conv.bias is None else conv.bias.detach().to(x.dtype)
        start = torch.cat([cache[hook("initial_state")].to(x.dtype), torch.zeros_like(x)], dim=-1)
        offset = F.conv1d(start, weight[:, None, :], bias, groups=weight.shape[0])  # [b, d, L]
        return ShortConvForm(B=B, C=C, weight=weight, value=x, output=y, bias_part=C * offset,
                             value_name=hook("x"), output_name=f"{hook('y')} (input of out_proj)")

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: Tensor, cache: dict) -> Tensor:
        """∂target/∂(output of the form), [b, d, L], from the gradient at hook_out [b, L, d_model]."""
        mixer = model.blocks[layer].mixer
        weight = (mixer.hf.out_proj if Lfm2.is_recurrent(model, layer) else mixer.out_proj).weight
        return (grad_out @ weight.detach().to(grad_out.dtype)).transpose(1, 2)
