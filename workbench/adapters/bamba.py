"""Bamba from `transformers` (IBM 2024): Mamba-2 layers (Dao & Gu 2024) with a few GQA attention layers
(partial RoPE), each followed by a SwiGLU MLP. The Mamba-2 layers are the Mamba2 adapter's mixer, hooked
the same way on both paths; the attention layers are `HookedRopeAttention` (KV cache as state).
"""

from __future__ import annotations

from torch import nn

from workbench.adapters.mamba2 import HookedMamba2Mixer
from workbench.adapters.mamba2_hybrid import (
    HookedMamba2Hybrid,
    HookedRopeAttention,
    HybridBlock,
    attention_sizes,
    mamba2_sizes,
)
from workbench.models.paths import ExecutionPath


class HookedBamba(HookedMamba2Hybrid):
    """BambaForCausalLM under the hook contract: Mamba-2 and attention layers, each with an MLP."""

    family = "bamba"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        kinds = ["mamba" if kind == "linear_attention" else "attention" for kind in cfg.layers_block_type]
        mamba = next((layer.mamba for layer in backbone.layers if layer.block_type == "linear_attention"), None)
        attention = next((layer.self_attn for layer in backbone.layers if layer.block_type == "full_attention"), None)
        sizes = {"d_model": cfg.hidden_size, "d_vocab": cfg.vocab_size,
                 **(mamba2_sizes(mamba) if mamba is not None else {}),
                 **(attention_sizes(cfg, attention) if attention is not None else {})}
        blocks = []
        for layer, kind in zip(backbone.layers, kinds, strict=True):
            mixer = (HookedMamba2Mixer(layer.mamba, sizes) if kind == "mamba"
                     else HookedRopeAttention(layer.self_attn, backbone.rotary_emb, sizes))
            blocks.append(HybridBlock(layer.input_layernorm, mixer, layer.pre_ff_layernorm, layer.feed_forward))
        super().__init__(hf_model, sizes, blocks, kinds, ln_final=backbone.final_layernorm,
                         embed=backbone.embed_tokens, unembed=hf_model.lm_head, path=path)
        self.setup()


__all__ = ["HookedBamba"]
