"""OLMo-Hybrid as implicit attention: its delta-rule layers are Qwen3-Next's map (`DeltaRuleForm`; β may
reach 2), its attention layers their own patterns with the KV cache in the bias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.analysis.implicit_attention.delta_rule import DELTA_HOOKS, Qwen3Next
from workbench.analysis.implicit_attention.kimi_linear import KimiLinear
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["OlmoHybrid"]

ATTENTION_HOOKS = ("v", "pattern", "z", "initial_v")


class OlmoHybrid(KimiLinear):
    """The delta-rule layers of the OLMo-Hybrid adapter -> `DeltaRuleForm`; its attention layers (no output
    gate; their post-norm acts after hook_out) -> `FullAttentionForm`. `output_grad` is Kimi's: through
    o_proj, and for the delta rule through the gated RMSNorm `o_norm`."""

    families = ("olmo_hybrid",)

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        recurrent = model is None or OlmoHybrid.is_recurrent(model, layer)
        return [get_act_name(q, layer) for q in (DELTA_HOOKS if recurrent else ATTENTION_HOOKS)]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str):
        if OlmoHybrid.is_recurrent(model, layer):
            return Qwen3Next.form(model, cache, layer, mode)
        return Qwen3Next.attention_form(model, cache, layer)
