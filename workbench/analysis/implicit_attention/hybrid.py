"""Mamba-1 hybrids as implicit attention: Jamba's and Zamba's Mamba layers as the S6 form, Jamba's
softmax-attention layers and Zamba's shared attention block as their own recorded patterns.

A Mamba layer's map is the S6 form (`s6.S6`, "exact" or "paper"), taken from the adapter's hooks; an
attention layer's map is its pattern per head, the KV cache's contribution in the bias
(`FullAttentionForm`). A Zamba hybrid layer applies two maps: the shared attention (on [resid; embedding],
its output through the shared MLP and the layer's linear added to the Mamba input), then the Mamba mixer;
`MambaHybrid.pre_layer_forms` gives the first, for the rollout to apply before the second. One stack-wide
map is the rollout of these maps over the blocks (`attribution.rollout`, `attribute(..., method="rollout")`):
an approximation, as rollout is for transformers, since it ignores the MLPs and experts, mixes each map
with the residual by a fixed half, and for Zamba's shared attention also treats the embedding half of its
input as the residual's positions (the token at j stands for both) and its MLP and linear as identity on
positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.analysis.implicit_attention.delta_rule import FullAttentionForm
from workbench.analysis.implicit_attention.form import LinearForm
from workbench.analysis.implicit_attention.s6 import S6
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["MambaHybrid", "attention_form", "shares_attention"]

ATTENTION_HOOKS = ("v", "pattern", "z", "initial_v")


def attention_form(model: HookedModel, cache: dict, layer: int, where: str = "mixer") -> FullAttentionForm:
    """A `HookedKvAttention` layer: its pattern per head, values per key/value head, output z.

    `where`: the attention's path in the block ("attn" for Zamba's shared attention block).
    """
    sz = model.blocks[layer].get_submodule(where).sizes

    def hook(name: str) -> str:
        return f"blocks.{layer}.{where}.hook_{name}"

    pattern = cache[hook("pattern")].permute(0, 2, 1, 3)  # [b, H, L, past + L]
    v, z = cache[hook("v")], cache[hook("z")]  # [b, L, H_kv, P], [b, L, H, P]
    H, P = sz["n_heads"], sz["d_head"]
    kv_of_head = torch.arange(H, device=v.device) // (H // sz["n_kv_heads"])
    value = v.index_select(2, kv_of_head).flatten(2).transpose(1, 2)  # [b, H·P, L]
    cached_v = cache[hook("initial_v")].index_select(1, kv_of_head).to(v.dtype)  # [b, H, past, P]
    state_part = pattern[..., : cached_v.shape[2]] @ cached_v  # [b, H, L, P]
    b, L = v.shape[0], v.shape[1]
    return FullAttentionForm(
        pattern=pattern, value=value, output=z.flatten(2).transpose(1, 2),
        state_part=state_part.permute(0, 1, 3, 2).reshape(b, H * P, L),
        head_index=torch.arange(H * P, device=v.device) // P, value_name=hook("v") + " (per query head)",
        output_name=hook("z"), projection=model.blocks[layer].get_submodule(where).out_proj.weight.detach().to(v.dtype),
    )


def shares_attention(model: HookedModel, layer: int) -> bool:
    """A Zamba hybrid layer: the shared attention block (`blocks.{l}.attn`) runs before its Mamba mixer."""
    return isinstance(getattr(model.blocks[layer], "attn", None), torch.nn.Module)


class MambaHybrid:
    """Jamba / Zamba -> per layer, the S6 form of its Mamba mixer or its attention pattern.

    Zamba's B and C are per Mamba head (spread to the head's channels); every Zamba layer has a Mamba
    mixer, so a layer's map (`form`, `implicit_attention`) is the Mamba one; a hybrid layer's shared
    attention (`blocks.{l}.attn.hook_pattern`) is its `pre_layer_forms`, which the rollout composes first.
    """

    families = ("jamba", "zamba")
    modes = ("exact", "paper")
    channel_name = "d_inner"

    @staticmethod
    def is_recurrent(model: HookedModel, layer: int) -> bool:
        return layer in model.recurrent_layers

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        if model is None or MambaHybrid.is_recurrent(model, layer):
            shared = ([f"blocks.{layer}.attn.hook_{q}" for q in ATTENTION_HOOKS]
                      if model is not None and shares_attention(model, layer) else [])
            return S6.hook_names(layer, mode, model) + shared
        return [get_act_name(q, layer) for q in ATTENTION_HOOKS]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str) -> LinearForm | FullAttentionForm:
        if not MambaHybrid.is_recurrent(model, layer):
            return attention_form(model, cache, layer)
        mixer = model.blocks[layer].mixer
        if not hasattr(mixer, "per_channel"):  # Jamba: B, C shared by every channel
            return S6.form(model, cache, layer, mode)
        B, C = (mixer.per_channel(cache[get_act_name(q, layer)]).transpose(1, 2) for q in ("B", "C"))  # [b, d, L, n]
        return S6.form_with(model, cache, layer, mode, B, C)

    @staticmethod
    def pre_layer_forms(model: HookedModel, cache: dict, layer: int) -> list[FullAttentionForm]:
        """Maps that run inside `layer` before its own, for the rollout: a Zamba hybrid layer's shared attention."""
        return [attention_form(model, cache, layer, where="attn")] if shares_attention(model, layer) else []

    @staticmethod
    def pre_layer_outputs(model: HookedModel, layer: int) -> list[str]:
        """The hooks at the outputs (W_o z) of `pre_layer_forms`: their gradient times W_o weighs those maps."""
        return [f"blocks.{layer}.attn.hook_out"] if shares_attention(model, layer) else []

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: Tensor, cache: dict) -> Tensor:
        """∂target/∂(output of the form), [b, d, L], from the gradient at hook_out [b, L, d_model]."""
        if MambaHybrid.is_recurrent(model, layer):
            return S6.output_grad(model, layer, mode, grad_out, cache)
        weight = model.blocks[layer].mixer.out_proj.weight.detach().to(grad_out.dtype)
        return (grad_out @ weight).transpose(1, 2)  # [b, H·P, L]: ∂/∂z
