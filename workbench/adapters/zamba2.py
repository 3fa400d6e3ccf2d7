"""Zamba2 from `transformers` (Glorioso et al. 2024, *Zamba2 suite*): a Mamba-2 backbone with shared transformer
blocks reused at several depths.

Every layer has a Mamba-2 mixer (the Mamba2 adapter's `HookedMamba2Mixer`, both paths). A hybrid layer
first runs a shared transformer block on [resid; embedding] (no residual inside it):
t = W_lin MLP(norm(attention(norm([h; e])))), then h + mamba(norm(h + t)). The `num_mem_blocks`
shared blocks are reused in turn (hybrid layer i uses block i mod num_mem_blocks); their weights are
tied across depths, but each depth adds its own LoRA adapters to q, k, v (`use_shared_attention_adapter`)
and to the MLP's gate/up projection, and keeps its own KV cache, which is part of that layer's state.
Each use is hooked at its depth: `blocks.{l}.shared_attn.hook_q` is the shared attention as layer l runs it.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from workbench.adapters.base import AdapterBlock, AdapterMixer, HookedNorm
from workbench.adapters.mamba2 import HookedMamba2Mixer
from workbench.adapters.mamba2_hybrid import HookedMamba2Hybrid, HookedRopeAttention, attention_sizes, mamba2_sizes
from workbench.adapters.rms_norm import FullPrecisionRMSNorm
from workbench.adapters.zamba import SharedTransformerBlock
from workbench.models.paths import ExecutionPath
from workbench.models.specs import HookSpec

__all__ = ["HookedZamba2", "Zamba2HybridBlock", "Zamba2SharedAttention"]


class Zamba2SharedAttention(HookedRopeAttention):
    """The shared attention as one depth runs it: the tied q/k/v/o projections plus this depth's LoRA
    adapters (q = W_q x + B_q A_q x, likewise k and v), optional RoPE, scale (d_head / 2)^-1/2."""

    def __init__(self, hf_attention: nn.Module, rotary: nn.Module | None, sizes: Mapping[str, int], depth: int):
        super().__init__(hf_attention, rotary, sizes)
        self.depth = depth  # this layer's index among the hybrid layers (the library's adapter slot)
        self.lora = None
        if hf_attention.config.use_shared_attention_adapter:
            self.lora = nn.ModuleList([getattr(hf_attention, f"linear_{name}_adapter_list")[depth] for name in "qkv"])

    def hook_specs(self) -> dict[str, HookSpec]:
        specs = super().hook_specs()
        lora = " plus this depth's LoRA adapter" if self.lora is not None else ""
        where = "before RoPE" if self.rotary is not None else "(no positional encoding)"
        for name, symbol in (("q", "queries W_q x_t"), ("k", "keys W_k x_t"), ("v", "values W_v x_t")):
            specs[name] = (specs[name][0], f"{symbol}{lora}" + ("" if name == "v" else f", {where}"))
        return specs

    def project(self, x_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = super().project(x_in)  # [batch, pos, heads · d_head]
        if self.lora is None:
            return q, k, v
        return q + self.lora[0](x_in), k + self.lora[1](x_in), v + self.lora[2](x_in)


class Zamba2HybridBlock(SharedTransformerBlock):
    """Zamba2's hybrid layer: one of the shared transformer blocks, with this depth's LoRA adapters, on
    [resid; embedding] before the Mamba-2 mixer; hooks on `shared_attn` fire only when this layer runs it."""

    attention_name = "shared_attn"
    mixer_label = "Mamba-2"
    mlp_label = "shared MLP output (with this depth's LoRA on its gate/up projection)"

    def __init__(self, hf_layer: nn.Module, mixer: AdapterMixer, rotary: nn.Module | None,
                 sizes: Mapping[str, int], layer: int, depth: int):
        super().__init__(FullPrecisionRMSNorm(hf_layer.mamba_decoder.input_layernorm), mixer)
        shared = hf_layer.shared_transformer
        self.layer, self.depth = layer, depth  # model layer index; index among hybrid layers
        self.attn_ln = HookedNorm(FullPrecisionRMSNorm(shared.input_layernorm))
        self.shared_attn = Zamba2SharedAttention(shared.self_attn, rotary, sizes, depth)
        self.mlp_ln = HookedNorm(FullPrecisionRMSNorm(shared.pre_ff_layernorm))
        self.mlp = shared.feed_forward  # gate/up projection plus this depth's LoRA, GELU-gated, down projection
        self.linear = hf_layer.linear

    def shared_mlp(self, x: Tensor) -> Tensor:
        return self.mlp(x, layer_idx=self.layer)  # the library picks this depth's LoRA by the layer index


class HookedZamba2(HookedMamba2Hybrid):
    """Zamba2ForCausalLM under the hook contract: Mamba-2 layers, some preceded by a shared transformer block."""

    family = "zamba2"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        kinds = list(cfg.layers_block_type)  # "hybrid" or (as the library reads anything else) Mamba-2 only
        first = backbone.layers[0]
        mamba = first.mamba_decoder.mamba if kinds[0] == "hybrid" else first.mamba
        attention = next((layer.shared_transformer.self_attn for layer, kind in zip(backbone.layers, kinds, strict=True)
                          if kind == "hybrid"), None)
        sizes = {"d_model": cfg.hidden_size, "d_vocab": cfg.vocab_size, "d_attn_in": cfg.attention_hidden_size,
                 **mamba2_sizes(mamba), **(attention_sizes(cfg, attention) if attention is not None else {})}
        rotary = backbone.rotary_emb if cfg.use_mem_rope else None
        blocks: list[AdapterBlock] = []
        depth = 0
        for layer, (hf_layer, kind) in enumerate(zip(backbone.layers, kinds, strict=True)):
            if kind == "hybrid":
                mixer = HookedMamba2Mixer(hf_layer.mamba_decoder.mamba, sizes)
                blocks.append(Zamba2HybridBlock(hf_layer, mixer, rotary, sizes, layer, depth))
                depth += 1
            else:
                blocks.append(AdapterBlock(FullPrecisionRMSNorm(hf_layer.input_layernorm),
                                           HookedMamba2Mixer(hf_layer.mamba, sizes)))
        super().__init__(hf_model, sizes, blocks, ["hybrid" if k == "hybrid" else "mamba" for k in kinds],
                         ln_final=FullPrecisionRMSNorm(backbone.final_layernorm), embed=backbone.embed_tokens,
                         unembed=hf_model.lm_head, path=path)
        self.setup()

    @property
    def recurrent_layers(self) -> list[int]:
        """Every layer has a Mamba-2 mixer (hybrid layers run the shared block before it)."""
        return list(range(len(self.blocks)))

    @property
    def hybrid_layers(self) -> list[int]:
        """The layers that run a shared transformer block before their Mamba-2 mixer."""
        return [layer for layer, kind in enumerate(self.layer_types) if kind == "hybrid"]

    @property
    def shared_blocks(self) -> dict[int, int]:
        """Hybrid layer -> which of the `num_mem_blocks` shared blocks it runs (the tied weights; its LoRA
        adapters and KV cache are its own)."""
        return {layer: self.blocks[layer].depth % self.hf_config.num_mem_blocks for layer in self.hybrid_layers}

    def block_inputs(self, block: nn.Module, embedding: Tensor) -> dict[str, Tensor]:
        """Hybrid blocks read the embedding (after `hook_embed`) beside the residual stream."""
        return {"embedding": embedding} if isinstance(block, Zamba2HybridBlock) else {}
