"""Mamba-2 hybrids (Bamba, GraniteMoeHybrid, NemotronH, Zamba2) as implicit attention, layer by layer and stack-wide.

Mamba-2 layers: the Mamba2 form (`implicit_attention.mamba2`, its modes exact / normed / paper) on the
same hooks. Attention layers: their own softmax pattern, exactly (values per query head, output z before
W_o, the KV cache of an earlier call to the bias), whatever the mode. `attribute(..., "rollout")`
composes the layers' channel-aggregated maps through the residual stream (Abnar & Zuidema 2020): an
approximation, since it treats the MLPs and norms between layers as identity on positions and the
aggregated per-channel maps as one map per layer; each layer's own map is exact.

Zamba2: every layer's map is its Mamba-2 mixer's; a hybrid layer's shared attention (this depth's use,
`blocks.{l}.shared_attn.hook_pattern`) is its own exact map (`shared_attention_form`), and the rollout
applies it as a stage before that layer's Mamba-2 map (`pre_layer_forms`). That is a further
approximation: the attention's output reaches the Mamba-2 input through the shared MLP and the layer's
linear, not the residual, and the embedding half of its input is treated as the residual stream. The
gradient-weighted rollout (`attr`) weights it by the gradient at `blocks.{l}.shared_attn.hook_out`
(`pre_layer_outputs`).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.analysis.implicit_attention.delta_rule import FullAttentionForm
from workbench.analysis.implicit_attention.form import LinearForm
from workbench.analysis.implicit_attention.mamba2 import Mamba2
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["Mamba2Hybrid", "attention_layer_form", "position_wise_form", "shared_attention_form"]

ATTENTION_HOOKS = ("v", "pattern", "z", "initial_v")


def attention_layer_form(model: HookedModel, cache: dict, layer: int, module: str = "mixer") -> FullAttentionForm:
    """A `HookedRopeAttention` layer (`module`: where the block holds it, Zamba2's `shared_attn`): pattern
    per head, values per key/value head, output z (before W_o)."""
    mixer = getattr(model.blocks[layer], module)
    sz = mixer.sizes
    hook = partial(get_act_name, layer=layer) if module == "mixer" else (
        lambda name: f"blocks.{layer}.{module}.hook_{name}")
    pattern = cache[hook("pattern")].permute(0, 2, 1, 3)  # [b, H, L, past + L]
    v, z = cache[hook("v")], cache[hook("z")]  # [b, L, H_kv, P], [b, L, H, P]
    H, P = sz["n_attn_heads"], sz["d_attn_head"]
    kv_of_head = torch.arange(H, device=v.device) // (H // sz["n_kv_heads"])
    value = v.index_select(2, kv_of_head).flatten(2).transpose(1, 2)  # [b, H·P, L]
    cached_v = cache[hook("initial_v")].index_select(1, kv_of_head).to(v.dtype)  # [b, H, past, P]
    state_part = pattern[..., :cached_v.shape[2]] @ cached_v  # [b, H, L, P]
    b, L = v.shape[0], v.shape[1]
    return FullAttentionForm(
        pattern=pattern, value=value, output=z.flatten(2).transpose(1, 2),
        state_part=state_part.permute(0, 1, 3, 2).reshape(b, H * P, L),
        head_index=torch.arange(H * P, device=v.device) // P, value_name=hook("v") + " (per query head)",
        output_name=hook("z"), projection=mixer.hf.o_proj.weight.detach().to(v.dtype),
    )


def shared_attention_form(model: HookedModel, cache: dict, layer: int) -> FullAttentionForm:
    """Zamba2: the shared attention as hybrid `layer` runs it (its LoRA, its KV cache to the bias), exactly."""
    return attention_layer_form(model, cache, layer, module="shared_attn")


def position_wise_form(model: HookedModel, cache: dict, layer: int) -> FullAttentionForm:
    """An MLP or mixture-of-experts block (NemotronH): it mixes no positions, so its map is the identity,
    exactly, with value = output = its hook_out."""
    out = cache[get_act_name("out", layer)].flatten(2).transpose(1, 2)  # [b, d_model, L]
    b, d, L = out.shape
    eye = torch.eye(L, dtype=out.dtype, device=out.device).expand(b, 1, L, L)  # [b, 1, L, L]
    return FullAttentionForm(pattern=eye, value=out, output=out, state_part=torch.zeros_like(out),
                             head_index=torch.zeros(d, dtype=torch.long, device=out.device),
                             value_name=get_act_name("out", layer), output_name=get_act_name("out", layer))


class Mamba2Hybrid:
    """The Mamba-2 hybrid adapters (`HookedMamba2Hybrid`): Mamba2 forms and attention patterns."""

    families = ("bamba", "granitemoehybrid", "nemotron_h", "zamba2")
    modes = Mamba2.modes
    channel_name = "d_inner"

    @staticmethod
    def is_recurrent(model: HookedModel, layer: int) -> bool:
        return model.layer_types[layer] in ("mamba", "hybrid")  # Zamba2's hybrid layers end in Mamba-2

    @staticmethod
    def pre_layer_forms(model: HookedModel, cache: dict, layer: int) -> list[FullAttentionForm]:
        """Maps that run inside `layer` before its own (Zamba2's shared attention), for the rollout."""
        if model.layer_types[layer] != "hybrid":
            return []
        return [shared_attention_form(model, cache, layer)]

    @staticmethod
    def pre_layer_outputs(model: HookedModel, layer: int) -> list[str]:
        """The hooks at the outputs (W_o z) of `pre_layer_forms`: their gradient times W_o weighs those maps."""
        return [f"blocks.{layer}.shared_attn.hook_out"] if model.layer_types[layer] == "hybrid" else []

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        if model is not None and model.layer_types[layer] == "hybrid":
            shared = [f"blocks.{layer}.shared_attn.hook_{q}" for q in ATTENTION_HOOKS]
            return Mamba2.hook_names(layer, mode, model) + shared
        if model is None or Mamba2Hybrid.is_recurrent(model, layer):
            return Mamba2.hook_names(layer, mode, model)
        if model.layer_types[layer] != "attention":
            return [get_act_name("out", layer)]
        return [get_act_name(q, layer) for q in ATTENTION_HOOKS]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str) -> LinearForm | FullAttentionForm:
        if Mamba2Hybrid.is_recurrent(model, layer):
            return Mamba2.form(model, cache, layer, mode)
        if model.layer_types[layer] != "attention":
            return position_wise_form(model, cache, layer)
        return attention_layer_form(model, cache, layer)

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: Tensor, cache: dict) -> Tensor:
        """∂target/∂(output of the form), [b, d, L]: the Mamba2 form's, or through W_o for attention."""
        if Mamba2Hybrid.is_recurrent(model, layer):
            return Mamba2.output_grad(model, layer, mode, grad_out, cache)
        if model.layer_types[layer] != "attention":
            return grad_out.transpose(1, 2)  # the form's output is hook_out itself
        weight = model.blocks[layer].mixer.hf.o_proj.weight.detach().to(grad_out.dtype)
        return (grad_out @ weight).transpose(1, 2)  # [b, H·P, L]
