"""Jamba from `transformers` (Lieber et al. 2024): Mamba-1 layers interleaved with attention, each
followed by an MLP or a sparse mixture of experts.

Mamba layers are `HookedMambaMixer` (the S6 quantities, reference loop and fused selective scan) with
Jamba's weighted RMS norms on the Δ input, B and C; attention layers are `HookedKvAttention` (grouped
query heads, no positional encoding, the KV cache as the state); MoE layers hook the router's logits,
the chosen experts and their weights. The library casts its RMSNorms, A = −exp(A_log), D and the Δ bias
to float32 whatever the model's dtype; in float64 this adapter keeps float64 throughout.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import AdapterMixer, HookedHybridLM
from workbench.adapters.kv_attention import HookedKvAttention
from workbench.adapters.mamba import HookedMambaMixer
from workbench.adapters.rms_norm import FullPrecisionRMSNorm, rms_norm
from workbench.adapters.routing import HookedRouting, RoutedMlpBlock, softmax_top_k
from workbench.models.paths import ExecutionPath
from workbench.models.specs import HookSpec

__all__ = ["HookedJamba", "HookedJambaMambaMixer", "HookedTopKMoe"]


class HookedJambaMambaMixer(HookedMambaMixer):
    """`transformers` JambaMambaMixer: the Mamba mixer with weighted RMS norms on Δ's input, B and C."""

    def normalize_dt_B_C(self, dt: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hf = self.hf
        return tuple(rms_norm(x, norm.weight, norm.variance_epsilon)  # type: ignore[return-value]
                     for x, norm in ((dt, hf.dt_layernorm), (B, hf.b_layernorm), (C, hf.c_layernorm)))


class HookedTopKMoe(HookedRouting):
    """A sparse mixture of experts (router, top-k of the softmax, experts) with its routing hooked; the
    experts' weights are the library's (`run_experts`). An edit to the router logits re-routes."""

    def __init__(self, hf_moe: nn.Module, normalize_top_k: bool = False):
        super().__init__(hf_moe)  # shares router.weight and the experts
        self.normalize_top_k = normalize_top_k

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "mlp.hook_router_logits": (("batch", "pos", "n_experts"), "router logits W_r x_t"),
            "mlp.hook_expert_index": (("batch", "pos", "top_k"),
                                      "the chosen experts' indices (whole numbers in the model's float dtype)"),
            "mlp.hook_expert_weights": (("batch", "pos", "top_k"), "the chosen experts' softmax probabilities"),
        }

    def forward(self, x: Tensor) -> Tensor:
        batch, pos, d_model = x.shape
        router = self.hf.router
        logits = self.hook_router_logits(F.linear(x, router.weight))  # [batch, pos, n_experts]
        weights, index = softmax_top_k(logits, router.top_k, self.normalize_top_k)  # [batch, pos, top_k]
        index, weights = self.hooked_choice(index, weights, logits.dtype)
        return run_experts(self.hf.experts, x.reshape(-1, d_model), index.reshape(-1, router.top_k),
                           weights.reshape(-1, router.top_k)).reshape(batch, pos, d_model)


def run_experts(experts: nn.Module, x: Tensor, index: Tensor, weights: Tensor) -> Tensor:
    """Σ_k weights[:, k] · expert_{index[:, k]}(x), each chosen expert run on every token.

    The library runs an expert on the tokens routed to it only, so a token's rounding depends on which
    other tokens share its experts, and an edit at t could move earlier positions by an ulp. Running
    each chosen expert on all N tokens (n_experts / top_k times the routed work, at most) keeps every
    position's numbers independent of the others': edits stay exactly causal. x [N, d], index/weights [N, k].
    """
    out = torch.zeros_like(x)  # [N, d]
    for expert in index.unique().tolist():  # in ascending order, as the library adds them
        share = (weights * (index == expert)).sum(-1, keepdim=True)  # [N, 1], zero where not chosen
        gate, up = F.linear(x, experts.gate_up_proj[expert]).chunk(2, dim=-1)  # [N, d_ff] each
        out = out + share * F.linear(experts.act_fn(gate) * up, experts.down_proj[expert])
    return out


class JambaBlock(RoutedMlpBlock):
    """resid_mid = resid_pre + mixer(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid))."""

    def __init__(self, hf_layer: nn.Module, mixer: AdapterMixer):
        ff = hf_layer.feed_forward
        mlp = HookedTopKMoe(ff) if hasattr(ff, "router") else ff
        super().__init__(FullPrecisionRMSNorm(hf_layer.input_layernorm), mixer,
                         FullPrecisionRMSNorm(hf_layer.pre_ff_layernorm), mlp)


class HookedJamba(HookedHybridLM):
    """JambaForCausalLM under the hook contract: Mamba-1 and attention layers, MLPs and experts."""

    family = "jamba"
    recurrent_kind = "mamba"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        d_inner = cfg.mamba_expand * cfg.hidden_size
        sizes = {
            "d_model": cfg.hidden_size, "d_vocab": cfg.vocab_size, "d_inner": d_inner,
            "d_state": cfg.mamba_d_state, "d_conv": cfg.mamba_d_conv, "d_conv-1": cfg.mamba_d_conv - 1,
            "dt_rank": int(cfg.mamba_dt_rank),
            "n_heads": cfg.num_attention_heads, "n_kv_heads": cfg.num_key_value_heads,
            "d_head": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
            "n_experts": cfg.num_experts, "top_k": cfg.num_experts_per_tok,
        }
        kinds = list(cfg.layers_block_type)  # "mamba" or "attention" per layer
        blocks = [JambaBlock(layer, self._mixer(layer, kind, sizes))
                  for layer, kind in zip(backbone.layers, kinds, strict=True)]
        super().__init__(hf_model, sizes, blocks, ln_final=FullPrecisionRMSNorm(backbone.final_layernorm),
                         embed=backbone.embed_tokens, unembed=hf_model.lm_head, path=path)
        self.layer_types = kinds
        self.setup()

    @staticmethod
    def _mixer(layer: nn.Module, kind: str, sizes: Mapping[str, int]) -> AdapterMixer:
        if kind == "mamba":
            return HookedJambaMambaMixer(layer.mamba, sizes)
        if kind == "attention":
            return HookedKvAttention(layer.self_attn, sizes, out_proj=layer.self_attn.o_proj)
        raise ValueError(f"unknown Jamba layer type {kind!r}; expected 'mamba' or 'attention'")
