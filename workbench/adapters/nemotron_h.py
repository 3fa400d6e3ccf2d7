"""NemotronH from `transformers` (NVIDIA Nemotron-H): one mixer per block, picked by the config's pattern —
Mamba-2 (the Mamba2 adapter's mixer), attention without positional encoding (`HookedRopeAttention` with
no rotary), a squared-ReLU MLP, or a mixture of experts with group-limited sigmoid routing. Every block
is resid + mixer(RMSNorm(resid)); MLP and MoE blocks are stateless mixers here, so the block loop,
stepping and `generate` treat all four kinds alike.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import AdapterBlock, AdapterMixer
from workbench.adapters.mamba2 import HookedMamba2Mixer
from workbench.adapters.mamba2_hybrid import HookedMamba2Hybrid, HookedRopeAttention, attention_sizes, mamba2_sizes
from workbench.adapters.routing import group_limited_top_k
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import State
from workbench.models.specs import RESID, HookSpec

KINDS = {"linear_attention": "mamba", "full_attention": "attention", "mlp": "mlp", "moe": "moe"}


class HookedFeedForward(AdapterMixer):
    """A position-wise block (the library's MLP) as a stateless mixer: its output is hooked, nothing carried."""

    quantities = ("out",)
    state_names = ()

    def __init__(self, hf_mlp: nn.Module, sizes: Mapping[str, int]):
        super().__init__(sizes)
        self.hf = hf_mlp  # shares up_proj, down_proj

    def hook_specs(self) -> dict[str, HookSpec]:
        return {"out": (RESID, "MLP output down(act(up x_t)), position-wise")}

    def state_specs(self) -> dict[str, HookSpec]:
        return {}

    def mix(self, x: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        self.last_kernel = "position-wise MLP (no recurrence)"
        return self.hook_out(self.hf(x)), {}


class HookedNemotronMoe(HookedFeedForward):
    """The library's mixture of experts with its routing hooked (sigmoid scores plus the correction bias
    pick the top groups, then the top-k experts; weights are the chosen scores, renormalised and scaled).
    An edit to the router logits re-routes; the experts and the shared expert are the library's."""

    quantities = ("router_logits", "expert_index", "expert_weights", "experts_out", "shared_out", "out")

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "router_logits": (("batch", "pos", "n_experts"), "router logits W_r x_t"),
            "expert_index": (("batch", "pos", "top_k"),
                             "the chosen experts' indices (whole numbers in the model's float dtype)"),
            "expert_weights": (("batch", "pos", "top_k"),
                               "the chosen experts' sigmoid scores, renormalised and scaled"),
            "experts_out": (RESID, "weighted sum of the chosen experts' outputs"),
            "shared_out": (RESID, "shared expert output"),
            "out": (RESID, "experts_out + shared_out"),
        }

    def mix(self, x: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf = self.hf
        self.last_kernel = "mixture of experts (no recurrence)"
        batch, pos, d_model = x.shape
        work = torch.promote_types(x.dtype, torch.float32)  # the library routes in float32
        logits = self.hook_router_logits(F.linear(x.to(work), hf.gate.weight.to(work)))  # [batch, pos, E]
        weights, index = group_limited_top_k(logits.reshape(batch * pos, -1), hf.gate, sort_choice=False)
        index = self.hook_expert_index(index.reshape(batch, pos, -1).to(logits.dtype)).round().long()
        weights = self.hook_expert_weights(weights.reshape(batch, pos, -1))  # [batch, pos, top_k]
        flat = hf.fc1_latent_proj(x.reshape(-1, d_model))
        experts = hf.experts(flat, index.reshape(batch * pos, -1), weights.reshape(batch * pos, -1))
        experts = self.hook_experts_out(hf.fc2_latent_proj(experts).reshape(batch, pos, d_model))
        shared = self.hook_shared_out(hf.shared_experts(x))
        return self.hook_out(experts + shared), {}


class HookedNemotronH(HookedMamba2Hybrid):
    """NemotronHForCausalLM under the hook contract: Mamba-2, attention, MLP and MoE blocks by pattern."""

    family = "nemotron_h"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        kinds = [KINDS[layer.block_type] for layer in backbone.layers]
        mamba = next((layer.mixer for layer, k in zip(backbone.layers, kinds, strict=True) if k == "mamba"), None)
        attention = next((layer.mixer for layer, k in zip(backbone.layers, kinds, strict=True)
                          if k == "attention"), None)
        sizes = {"d_model": cfg.hidden_size, "d_vocab": cfg.vocab_size,
                 **(mamba2_sizes(mamba) if mamba is not None else {}),
                 **(attention_sizes(cfg, attention) if attention is not None else {})}
        if "moe" in kinds:
            sizes.update({"n_experts": cfg.n_routed_experts, "top_k": cfg.num_experts_per_tok})
        blocks = [AdapterBlock(layer.norm, self._mixer(layer.mixer, kind, sizes))
                  for layer, kind in zip(backbone.layers, kinds, strict=True)]
        super().__init__(hf_model, sizes, blocks, kinds, ln_final=backbone.norm_f, embed=backbone.embeddings,
                         unembed=hf_model.lm_head, path=path)
        self.setup()

    @staticmethod
    def _mixer(hf_mixer: nn.Module, kind: str, sizes: Mapping[str, int]) -> AdapterMixer:
        if kind == "mamba":
            return HookedMamba2Mixer(hf_mixer, sizes)
        if kind == "attention":
            return HookedRopeAttention(hf_mixer, None, sizes)
        return HookedNemotronMoe(hf_mixer, sizes) if kind == "moe" else HookedFeedForward(hf_mixer, sizes)


__all__ = ["HookedFeedForward", "HookedNemotronH", "HookedNemotronMoe"]
