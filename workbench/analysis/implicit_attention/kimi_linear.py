"""Kimi-Linear as implicit attention: its KDA layers are the delta rule with a per-channel decay
(`delta_rule.DeltaRuleForm` with log_alpha [b, H, L, d_k]); its latent-attention layers are their own
patterns, with the cached latents' values in the bias.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.adapters.qwen3_next import rms_normalize
from workbench.analysis.implicit_attention.delta_rule import DELTA_HOOKS, FullAttentionForm, Qwen3Next
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["KimiLinear"]

LATENT_ATTENTION_HOOKS = ("v", "pattern", "z", "initial_latent", "initial_k_shared")


class KimiLinear(Qwen3Next):
    """The KDA layers of the Kimi-Linear adapter (`HookedKimiDeltaAttention`) -> `DeltaRuleForm`; the latent
    attention layers -> `FullAttentionForm`. Modes and the map's span (v after the conv to o before the gated
    RMSNorm) are Qwen3-Next's."""

    families = ("kimi_linear",)

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        recurrent = model is None or KimiLinear.is_recurrent(model, layer)
        return [get_act_name(q, layer) for q in (DELTA_HOOKS if recurrent else LATENT_ATTENTION_HOOKS)]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str):
        if KimiLinear.is_recurrent(model, layer):
            return Qwen3Next.form(model, cache, layer, mode)
        return KimiLinear.attention_form(model, cache, layer)

    @staticmethod
    def attention_form(model: HookedModel, cache: dict, layer: int) -> FullAttentionForm:
        """Pattern per head, values per head (this call's), output z; cached latents expand to the bias."""
        mixer = model.blocks[layer].mixer
        hook = partial(get_act_name, layer=layer)
        pattern = cache[hook("pattern")].permute(0, 2, 1, 3)  # [b, H, L, past + L]
        v, z = cache[hook("v")], cache[hook("z")]  # [b, L, H, P]
        b, L, H, P = v.shape
        latent, shared = cache[hook("initial_latent")], cache[hook("initial_k_shared")]  # [b, 1, past, ·]
        with torch.no_grad():  # the cached values are recorded quantities, as the pattern is
            _, cached_v = mixer._expand(latent[:, 0].to(v.dtype), shared[:, 0].to(v.dtype))  # [b, past, H, P]
        past = cached_v.shape[1]
        state_part = pattern[..., :past] @ cached_v.transpose(1, 2)  # [b, H, L, P]
        return FullAttentionForm(
            pattern=pattern, value=v.flatten(2).transpose(1, 2), output=z.flatten(2).transpose(1, 2),
            state_part=state_part.permute(0, 1, 3, 2).reshape(b, H * P, L),
            head_index=torch.arange(H * P, device=v.device) // P, value_name=hook("v"), output_name=hook("z"),
        )

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: Tensor, cache: dict) -> Tensor:
        """∂target/∂(output of the form), [b, d, L], from the gradient at hook_out [b, L, d_model]:
        through W_o (attention), or through o_proj and the gated RMSNorm by autograd (KDA, gate held)."""
        mixer = model.blocks[layer].mixer
        g = grad_out @ mixer.hf.o_proj.weight.detach().to(grad_out.dtype)  # [b, L, H·P]
        if not KimiLinear.is_recurrent(model, layer):
            return g.transpose(1, 2)
        hook = partial(get_act_name, layer=layer)
        o = cache[hook("o")].detach().to(g.dtype).requires_grad_(True)  # [b, L, H, d_v]
        gate = cache[hook("gate")].to(g.dtype)
        norm = mixer.hf.o_norm
        with torch.enable_grad():
            normed = norm.weight.detach().to(g.dtype) * rms_normalize(o, norm.variance_epsilon) * gate
            (g,) = torch.autograd.grad(normed, o, g.reshape(o.shape).to(normed.dtype))
        return g.flatten(2).transpose(1, 2).to(grad_out.dtype)
