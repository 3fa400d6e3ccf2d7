"""Kimi-Linear from `transformers`: Kimi Delta Attention (KDA, the gated delta rule with a per-channel
decay) interleaved with multi-head latent attention (MLA, no positional encoding), each followed by an MLP
or a DeepSeek-V3-style mixture of experts (sigmoid router, expert groups, shared experts).

The KDA layer, with hooks, per head h (d_k = d_v = `linear_head_dim`):

    (q, k, v) = SiLU(causal depthwise conv(W_q x, W_k x, W_v x))   (hook_qkv before the conv)
    q_t = l2norm(q) / sqrt(d_k), k_t = l2norm(k), v_t                 (hook_q, hook_k, hook_v)
    β_t = σ(W_b x),  α_t = exp(−e^{A_log} softplus(W_fb W_fa x + b_dt)) ∈ (0, 1)^{d_k}   (hook_beta, hook_alpha)
    S_t = diag(α_t) S_{t−1} + β_t k_t (v_t − (diag(α_t) S_{t−1})ᵀ k_t)ᵀ  (hook_state, [d_k, d_v] per head)
    o_t = S_tᵀ q_t;  out = W_o(RMSNorm(o_t) ⊙ w ⊙ σ(W_gb W_ga x_t))     (hook_o, hook_gate, hook_normed, hook_out)

The MLA layer keeps, as the library does, the compressed latents as its KV cache: the normalised latent
c_t = RMSNorm(W_dkv x_t) and the shared key part k^R_t (not rotated: Kimi uses no RoPE); keys and values
of every head are W_ukv c_t (plus k^R_t for keys). Both paths compute in the model's dtype; the library
casts its norms, router, softmax and KDA kernel to float32 whatever the dtype.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import AdapterMixer, HookedHybridLM, mask_positions
from workbench.adapters.kv_attention import KvCacheMixer
from workbench.adapters.qwen3_next import (
    HookedGatedDeltaNet,
    l2_normalize,
    rms_normalize,
    working_dtype,
)
from workbench.adapters.routing import HookedRouting, RoutedMlpBlock, group_limited_top_k
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import State
from workbench.models.residual import LinearNorm
from workbench.models.specs import RESID, HookSpec

BPHD = ("batch", "pos", "n_v_heads", "d_k")
BPH = ("batch", "pos", "n_v_heads")


class RmsNorm(nn.Module):
    """The library's KimiLinearRMSNorm, w · RMSNorm(x), computed in float64 for a float64 model (the library
    casts to float32); shares the library's weight."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        normed = rms_normalize(x, self.norm.variance_epsilon)
        return self.norm.weight.to(normed.dtype) * normed.to(x.dtype)

    def linear_reading(self) -> LinearNorm:
        """As an RMSNorm with gain w, for the cache's `apply_ln_to_stack` (`models.residual`)."""
        return LinearNorm("rmsnorm", self.norm.weight, None, float(self.norm.variance_epsilon),
                          type(self.norm).__name__)


class HookedKimiDeltaAttention(HookedGatedDeltaNet):
    """`transformers` KimiLinearDeltaAttention recomputed with every KDA quantity hooked; the step, the
    chunked pass and the edit route are the gated delta net's, with α per key channel."""

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "qkv": (("batch", "pos", "d_qkv"), "in-projected (q, k, v) before the conv"),
            "q": (BPHD, "query q_t = l2norm(SiLU(conv)_q) / sqrt(d_k)"),
            "k": (BPHD, "key k_t = l2norm(SiLU(conv)_k)"),
            "v": (("batch", "pos", "n_v_heads", "d_v"), "value v_t = SiLU(conv)_v"),
            "beta": (BPH, "writing strength β_t = σ(W_b x_t)"),
            "alpha": (BPHD, "per-channel decay α_t = exp(−e^{A_log} softplus(W_fb W_fa x_t + b_dt))"),
            "state": (("batch", "pos", "n_v_heads", "d_k", "d_v"),
                      "matrix state S_t = diag(α_t) S_{t−1} + β_t k_t (v_t − (diag(α_t) S_{t−1})ᵀ k_t)ᵀ"),
            "o": (("batch", "pos", "n_v_heads", "d_v"), "delta-rule readout o_t = S_tᵀ q_t"),
            "gate": (("batch", "pos", "n_v_heads", "d_v"), "output gate σ(W_gb W_ga x_t)"),
            "normed": (("batch", "pos", "n_v_heads", "d_v"), "RMSNorm(o_t) ⊙ w ⊙ gate_t, per head"),
            "out": (RESID, "layer output W_o normed_t"),
        }

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf, sz = self.hf, self.sizes
        batch, pos = x_in.shape[:2]
        heads, d_k = sz["n_v_heads"], sz["d_k"]
        x_in = mask_positions(x_in, mask)
        qkv = self.hook_qkv(torch.cat([hf.q_proj(x_in), hf.k_proj(x_in), hf.v_proj(x_in)], dim=-1))
        mixed, new_conv = self.short_conv(qkv, state["conv"], hf.conv1d)  # [batch, pos, d_qkv]
        q_part, k_part, v_part = (part.reshape(batch, pos, heads, d_k) for part in mixed.chunk(3, dim=-1))
        q = self.hook_q(l2_normalize(q_part) * d_k ** -0.5)  # [batch, pos, H, d_k]
        k = self.hook_k(l2_normalize(k_part))
        v = self.hook_v(v_part.to(q.dtype))  # [batch, pos, H, d_v]
        beta = self.hook_beta(torch.sigmoid(hf.b_proj(x_in).to(q.dtype)))  # [batch, pos, H]
        gate_module = hf.forget_gate
        raw = gate_module.f_b_proj(gate_module.f_a_proj(x_in)).to(q.dtype) + gate_module.dt_bias.to(q.dtype)
        rate = gate_module.A_log.to(q.dtype).exp().reshape(heads, 1)  # e^{A_log} per head  [H, 1]
        alpha, log_alpha = self.hooked_decay(-rate * F.softplus(raw.reshape(batch, pos, heads, d_k)))  # [b, p, H, d_k]
        inputs = {"q": q, "k": k, "v": v, "alpha": alpha, "beta": beta, "log_alpha": log_alpha}
        o, final = self.recur(inputs, state["state"].to(q.dtype), fused)
        gate = self.hook_gate(torch.sigmoid(hf.g_b_proj(hf.g_a_proj(x_in)).reshape(batch, pos, heads, d_k)
                                            .to(q.dtype)))  # [batch, pos, H, d_v]
        out = self.gated_output(o, gate, hf.o_norm, hf.o_proj, x_in.dtype)  # [batch, pos, d_model]
        return out, {"conv": new_conv, "state": final.to(x_in.dtype)}


class HookedLatentAttention(KvCacheMixer):
    """`transformers` KimiLinearAttention (multi-head latent attention without RoPE), hooked.

    Its state is the library's KV cache: the normalised latents and shared key parts read so far, of any length.
    """

    cache_key = "latent"
    quantities = ("q", "latent", "k_shared", "k", "v", "pattern", "z", "out")
    state_names = ("latent", "k_shared")

    def __init__(self, hf_attention: nn.Module, sizes: Mapping[str, int]):
        super().__init__(sizes)
        self.hf = hf_attention  # shares q_proj (or q_a/q_b), kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "q": (("batch", "pos", "n_heads", "d_qk"), "queries [nope part, shared-key part] per head"),
            "latent": (("batch", "pos", "kv_lora_rank"), "normalised KV latent c_t = RMSNorm(W_dkv x_t)"),
            "k_shared": (("batch", "pos", "d_rope"), "key part shared by every head (no RoPE applied)"),
            "k": (("batch", "pos", "n_heads", "d_qk"), "keys [W_uk c_t, shared part] of this call's positions"),
            "v": (("batch", "pos", "n_heads", "d_head_v"), "values W_uv c_t of this call's positions"),
            "pattern": (("batch", "pos", "n_heads", "key_pos"),
                        "attention weights over the cached positions then this call's"),
            "z": (("batch", "pos", "n_heads", "d_head_v"), "pattern-weighted values per head"),
            "out": (RESID, "layer output W_o z_t"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {
            "latent": (("batch", "one", "past", "kv_lora_rank"), "normalised latents read so far (KV cache)"),
            "k_shared": (("batch", "one", "past", "d_rope"), "shared key parts read so far (KV cache)"),
        }

    def _expand(self, latent: Tensor, shared: Tensor) -> tuple[Tensor, Tensor]:
        """latent [batch, n, r], shared [batch, n, d_rope] -> keys [batch, n, H, d_qk], values [batch, n, H, d_v]."""
        hf, sz = self.hf, self.sizes
        batch, n = latent.shape[:2]
        expanded = hf.kv_b_proj(latent).view(batch, n, sz["n_heads"], sz["d_nope"] + sz["d_head_v"])
        k_nope, value = expanded.split([sz["d_nope"], sz["d_head_v"]], dim=-1)
        keys = torch.cat([k_nope, shared[:, :, None].expand(batch, n, sz["n_heads"], sz["d_rope"])], dim=-1)
        return keys, value

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf, sz = self.hf, self.sizes
        batch, pos = x_in.shape[:2]
        self.last_kernel = "full attention (no recurrence)"
        if hf.q_lora_rank is None:
            query = hf.q_proj(x_in)
        else:
            query = hf.q_b_proj(RmsNorm(hf.q_a_layernorm)(hf.q_a_proj(x_in)))
        q = self.hook_q(query.view(batch, pos, sz["n_heads"], sz["d_qk"]))  # [batch, pos, H, d_qk]
        latent, shared = hf.kv_a_proj_with_mqa(x_in).split([sz["kv_lora_rank"], sz["d_rope"]], dim=-1)
        latent = self.hook_latent(RmsNorm(hf.kv_a_layernorm)(latent))  # [batch, pos, r]
        shared = self.hook_k_shared(shared)  # [batch, pos, d_rope]
        past = state["latent"].shape[2]
        k, v = self._expand(latent, shared)
        k, v = self.hook_k(k), self.hook_v(v)  # [batch, pos, H, d]
        if past:
            cached_k, cached_v = self._expand(state["latent"][:, 0].to(x_in.dtype),
                                              state["k_shared"][:, 0].to(x_in.dtype))
            k, v = torch.cat([cached_k, k], dim=1), torch.cat([cached_v, v], dim=1)  # [batch, past+pos, H, d]
        scores = q.transpose(1, 2) @ k.permute(0, 2, 3, 1) * hf.scaling  # [batch, H, pos, past+pos]
        pattern = self.hooked_pattern(scores, past, mask)  # [batch, pos, H, past+pos]
        z = self.hook_z((pattern.transpose(1, 2) @ v.transpose(1, 2)).transpose(1, 2))  # [batch, pos, H, d_v]
        out = self.hook_out(hf.o_proj(z.reshape(batch, pos, -1)))  # [batch, pos, d_model]
        new_state = {"latent": torch.cat([state["latent"], latent[:, None]], dim=2),
                     "k_shared": torch.cat([state["k_shared"], shared[:, None]], dim=2)}
        return out, new_state


class HookedKimiMoe(HookedRouting):
    """`transformers` KimiLinearMoE with its routing hooked: the router's logits, the chosen experts and their
    weights (an edit to the logits re-routes); the experts and the shared experts are the library's.

    Routing (DeepSeek-V3): scores σ(logits); experts are chosen by scores + correction bias, only within the
    `topk_group` groups whose two best biased scores sum highest; weights are the chosen unbiased scores,
    renormalised where the config says so, times `routed_scaling_factor`.
    """

    def __init__(self, hf_moe: nn.Module):
        super().__init__(hf_moe)
        self.hook_experts_out = ScopedHookPoint()
        self.hook_shared_out = ScopedHookPoint()

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "mlp.hook_router_logits": (("batch", "pos", "n_experts"),
                                       "router logits W_r x_t (the scores are their sigmoid)"),
            "mlp.hook_expert_index": (("batch", "pos", "top_k"),
                                      "the chosen experts' indices (whole numbers in the model's float dtype)"),
            "mlp.hook_expert_weights": (("batch", "pos", "top_k"),
                                        "the chosen experts' weights (renormalised scores times the scaling factor)"),
            "mlp.hook_experts_out": (RESID, "weighted sum of the chosen experts' outputs"),
            "mlp.hook_shared_out": (RESID, "shared experts' output"),
        }

    def forward(self, x: Tensor) -> Tensor:
        hf = self.hf
        batch, pos, d_model = x.shape
        logits = self.hook_router_logits(F.linear(x.to(working_dtype(x)), hf.gate.weight.to(working_dtype(x))))
        weights, index = group_limited_top_k(logits.reshape(batch * pos, -1), hf.gate)  # [batch·pos, top_k]
        top_k = index.shape[-1]
        index, weights = self.hooked_choice(index.reshape(batch, pos, top_k), weights.reshape(batch, pos, top_k),
                                            x.dtype)
        experts = hf.experts(x.reshape(-1, d_model), index.reshape(-1, top_k), weights.reshape(-1, top_k))
        experts = self.hook_experts_out(experts.reshape(batch, pos, d_model))
        shared = self.hook_shared_out(hf.shared_experts(x))
        return experts + shared


class KimiBlock(RoutedMlpBlock):
    """resid_mid = resid_pre + mixer(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid))."""

    def __init__(self, hf_layer: nn.Module, mixer: AdapterMixer):
        mlp = HookedKimiMoe(hf_layer.mlp) if hasattr(hf_layer.mlp, "experts") else hf_layer.mlp
        super().__init__(RmsNorm(hf_layer.input_layernorm), mixer, RmsNorm(hf_layer.post_attention_layernorm), mlp)


class HookedKimiLinear(HookedHybridLM):
    """KimiLinearForCausalLM under the hook contract: KDA and latent-attention layers."""

    family = "kimi_linear"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        heads, head_dim = cfg.linear_num_heads, cfg.linear_head_dim
        sizes = {
            "d_model": cfg.hidden_size, "d_vocab": cfg.vocab_size,
            "n_k_heads": heads, "n_v_heads": heads, "d_k": head_dim, "d_v": head_dim,
            "d_inner": heads * head_dim, "d_qkv": 3 * heads * head_dim,
            "d_conv": cfg.linear_conv_kernel_dim, "d_conv-1": cfg.linear_conv_kernel_dim - 1,
            "n_heads": cfg.num_attention_heads, "d_nope": cfg.qk_nope_head_dim, "d_rope": cfg.qk_rope_head_dim,
            "d_qk": cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, "d_head_v": cfg.v_head_dim,
            "kv_lora_rank": cfg.kv_lora_rank, "one": 1,
            "n_experts": cfg.num_local_experts, "top_k": cfg.num_experts_per_tok,
        }
        blocks = [KimiBlock(layer, self._mixer(layer, kind, sizes))
                  for layer, kind in zip(backbone.layers, cfg.layer_types, strict=True)]
        super().__init__(hf_model, sizes, blocks, ln_final=RmsNorm(backbone.norm),
                         embed=backbone.embed_tokens, unembed=hf_model.lm_head, path=path)
        self.layer_types = list(cfg.layer_types)
        self.setup()

    @staticmethod
    def _mixer(layer: nn.Module, kind: str, sizes: Mapping[str, int]) -> AdapterMixer:
        if kind == "linear_attention":
            return HookedKimiDeltaAttention(layer.self_attn, sizes)
        if kind == "full_attention":
            return HookedLatentAttention(layer.self_attn, sizes)
        raise ValueError(f"unknown Kimi-Linear layer type {kind!r}; expected 'linear_attention' or 'full_attention'")


__all__ = ["HookedKimiDeltaAttention", "HookedKimiLinear", "HookedKimiMoe", "HookedLatentAttention", "RmsNorm"]
