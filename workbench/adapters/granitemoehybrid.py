"""GraniteMoeHybrid from `transformers` (IBM Granite 4.0): Bamba-like Mamba-2 and attention layers, each
followed by a top-k mixture of experts plus a shared MLP, with Granite's μP multipliers (embedding,
residual, attention scale, logits scaling) applied exactly where the library applies them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.mamba2 import HookedMamba2Mixer
from workbench.adapters.mamba2_hybrid import (
    HookedMamba2Hybrid,
    HookedRopeAttention,
    HybridBlock,
    ScaledEmbedding,
    ScaledHead,
    attention_sizes,
    mamba2_sizes,
)
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.paths import ExecutionPath
from workbench.models.specs import RESID, HookSpec

MOE_SPECS: dict[str, HookSpec] = {
    "hook_router_logits": (("batch", "pos", "n_experts"), "router logits W_r x_t"),
    "hook_expert_index": (("batch", "pos", "top_k"),
                          "the chosen experts' indices (whole numbers in the model's float dtype)"),
    "hook_expert_weights": (("batch", "pos", "top_k"), "softmax over the chosen experts' logits"),
    "hook_experts_out": (RESID, "weighted sum of the chosen experts' outputs"),
    "hook_shared_out": (RESID, "shared MLP output"),
}
SHARED_SPECS: dict[str, HookSpec] = {"hook_shared_out": (RESID, "shared MLP output")}


class HookedGraniteMoe(nn.Module):
    """The library's mixture of experts (top-k of the router logits, softmax over those k) plus its shared
    MLP, with the routing hooked: an edit to the logits re-routes; experts and MLP are the library's."""

    def __init__(self, hf_moe: nn.Module | None, shared_mlp: nn.Module):
        super().__init__()
        self.hf = hf_moe  # shares the router and the experts (None: a dense layer, shared MLP only)
        self.shared_mlp = shared_mlp
        self.hook_shared_out = ScopedHookPoint()
        if hf_moe is not None:
            for name in ("router_logits", "expert_index", "expert_weights", "experts_out"):
                setattr(self, f"hook_{name}", ScopedHookPoint())

    def forward(self, x: Tensor) -> Tensor:
        shared = self.hook_shared_out(self.shared_mlp(x))  # [batch, pos, d_model]
        if self.hf is None:
            return shared
        batch, pos, d_model = x.shape
        router = self.hf.router
        logits = self.hook_router_logits(F.linear(x, router.weight))  # [batch, pos, n_experts]
        top, index = logits.to(torch.promote_types(logits.dtype, torch.float32)).topk(router.top_k, dim=-1)
        index = self.hook_expert_index(index.to(logits.dtype)).round().long()  # [batch, pos, top_k]
        weights = self.hook_expert_weights(torch.softmax(top, dim=-1).to(x.dtype))
        flat = x.reshape(-1, d_model)
        experts = self.hf.experts(flat, index.reshape(-1, router.top_k), weights.reshape(-1, router.top_k))
        return self.hook_experts_out(experts.reshape(batch, pos, d_model)) + shared


class HookedGraniteMoeHybrid(HookedMamba2Hybrid):
    """GraniteMoeHybridForCausalLM under the hook contract: Mamba-2 and attention layers with MoE MLPs."""

    family = "granitemoehybrid"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        kinds = ["mamba" if layer.mamba is not None else "attention" for layer in backbone.layers]
        mamba = next((layer.mamba for layer in backbone.layers if layer.mamba is not None), None)
        attention = next((layer.self_attn for layer in backbone.layers if layer.self_attn is not None), None)
        sizes = {"d_model": cfg.hidden_size, "d_vocab": cfg.vocab_size,
                 **(mamba2_sizes(mamba) if mamba is not None else {}),
                 **(attention_sizes(cfg, attention) if attention is not None else {})}
        if cfg.num_local_experts > 0:
            sizes.update({"n_experts": cfg.num_local_experts, "top_k": cfg.num_experts_per_tok})
        blocks = []
        for layer, kind in zip(backbone.layers, kinds, strict=True):
            mixer = (HookedMamba2Mixer(layer.mamba, sizes) if kind == "mamba"
                     else HookedRopeAttention(layer.self_attn, backbone.rotary_emb, sizes))
            moe = layer.block_sparse_moe if layer.has_experts else None
            blocks.append(HybridBlock(layer.input_layernorm, mixer, layer.post_attention_layernorm,
                                      HookedGraniteMoe(moe, layer.shared_mlp), cfg.residual_multiplier,
                                      MOE_SPECS if moe is not None else SHARED_SPECS))
        super().__init__(hf_model, sizes, blocks, kinds, ln_final=backbone.norm,
                         embed=ScaledEmbedding(backbone.embed_tokens, cfg.embedding_multiplier),
                         unembed=ScaledHead(hf_model.lm_head, cfg.logits_scaling), path=path)
        self.setup()


__all__ = ["HookedGraniteMoe", "HookedGraniteMoeHybrid"]
