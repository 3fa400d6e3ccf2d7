"""Qwen3-Next from `transformers`: gated delta-rule layers (Yang et al. 2024, *Gated Delta Networks*)
interleaved with gated full attention, each followed by an MLP or a mixture of experts.

The linear-attention (Gated DeltaNet) layer, with hooks, per value head h (key heads shared by groups):

    (q, k, v) = SiLU(causal depthwise conv(W_qkv x))             (hook_qkv before the conv)
    q_t = l2norm(q) / sqrt(d_k), k_t = l2norm(k), v_t            (hook_q, hook_k per key head; hook_v)
    β_t = σ(W_b x),  α_t = exp(−e^{A_log} softplus(W_a x + b_dt))  (hook_beta, hook_alpha)
    S_t = α_t S_{t−1} + β_t k_t (v_t − α_t S_{t−1}ᵀ k_t)ᵀ          (hook_state, [d_k, d_v] per head)
    o_t = S_tᵀ q_t;  out = W_o(RMSNorm(o_t) ⊙ w ⊙ SiLU(z_t))      (hook_o, hook_gate, hook_normed, hook_out)

S_t is stored [d_k, d_v] as the library keeps it: the transpose of the paper's
S_t = α_t S_{t−1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ. The fused path is the chunked UT-transform form
(`workbench.kernels.delta_rule`), in the model's dtype; the library's own kernel always runs in float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import (
    AdapterMixer,
    HookedHybridLM,
    mask_positions,
)
from workbench.adapters.kv_attention import KvCacheMixer
from workbench.adapters.routing import HookedRouting, RoutedMlpBlock, softmax_top_k
from workbench.kernels.delta_rule import chunked_delta_rule
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import Emit, State, run_recurrence
from workbench.models.residual import LinearNorm
from workbench.models.specs import RESID, HookSpec

if TYPE_CHECKING:
    from transformers import PretrainedConfig

BPKD = ("batch", "pos", "n_k_heads", "d_k")
BPVD = ("batch", "pos", "n_v_heads", "d_v")
BPV = ("batch", "pos", "n_v_heads")
DEFAULT_CHUNK_SIZE = 64


def working_dtype(x: Tensor) -> torch.dtype:
    """At least float32, as the library's norms and kernels compute; float64 stays float64."""
    return torch.promote_types(x.dtype, torch.float32)


def rms_normalize(x: Tensor, eps: float) -> Tensor:
    """x / sqrt(mean(x²) + eps) over the last axis, in at least float32."""
    x = x.to(working_dtype(x))
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(Σx² + eps) over the last axis (the library's and FLA's l2norm), in at least float32."""
    x = x.to(working_dtype(x))
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


class OffsetRmsNorm(nn.Module):
    """The library's Qwen3NextRMSNorm, RMSNorm(x) · (1 + w), computed in float64 for a float64 model
    (the library casts to float32); shares the library's weight."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        weight = self.norm.weight.to(working_dtype(x))
        return (rms_normalize(x, self.norm.eps) * (1.0 + weight)).to(x.dtype)

    def linear_reading(self) -> LinearNorm:
        """As an RMSNorm with gain 1 + w, for the cache's `apply_ln_to_stack` (`models.residual`)."""
        return LinearNorm("rmsnorm", 1.0 + self.norm.weight, None, float(self.norm.eps), type(self.norm).__name__)


class HookedGatedDeltaNet(AdapterMixer):
    """`transformers` Qwen3NextGatedDeltaNet recomputed with every delta-rule quantity hooked."""

    quantities = ("qkv", "q", "k", "v", "beta", "alpha", "state", "o", "gate", "normed", "out")
    state_names = ("conv", "state")

    def __init__(self, hf_layer: nn.Module, sizes: Mapping[str, int], chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__(sizes)
        self.hf = hf_layer  # shares in_proj_qkvz, in_proj_ba, conv1d, dt_bias, A_log, norm, out_proj
        self.chunk_size = chunk_size

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "qkv": (("batch", "pos", "d_qkv"), "in-projected (q, k, v) before the conv"),
            "q": (BPKD, "query q_t = l2norm(SiLU(conv)_q) / sqrt(d_k), per key head"),
            "k": (BPKD, "key k_t = l2norm(SiLU(conv)_k), per key head"),
            "v": (BPVD, "value v_t = SiLU(conv)_v, per value head"),
            "beta": (BPV, "writing strength β_t = σ(W_b x_t)"),
            "alpha": (BPV, "decay α_t = exp(−e^{A_log} softplus(W_a x_t + b_dt))"),
            "state": (("batch", "pos", "n_v_heads", "d_k", "d_v"),
                      "matrix state S_t = α_t S_{t−1} + β_t k_t (v_t − α_t S_{t−1}ᵀ k_t)ᵀ, [d_k, d_v] per head"),
            "o": (BPVD, "delta-rule readout o_t = S_tᵀ q_t"),
            "gate": (BPVD, "output gate SiLU(z_t)"),
            "normed": (BPVD, "RMSNorm(o_t) ⊙ w ⊙ gate_t, per head"),
            "out": (RESID, "layer output W_o normed_t"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {
            "conv": (("batch", "d_qkv", "d_conv-1"), "the last d_conv − 1 conv inputs qkv"),
            "state": (("batch", "n_v_heads", "d_k", "d_v"), "initial matrix state S_{-1}"),
        }

    def per_value_head(self, x: Tensor) -> Tensor:
        """[..., n_k_heads, d] -> [..., n_v_heads, d]: each key head serves n_v_heads / n_k_heads value heads."""
        return x.repeat_interleave(self.sizes["n_v_heads"] // self.sizes["n_k_heads"], dim=-2)

    @staticmethod
    def _step(inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        """One step of the gated delta rule per head: q, k [batch, H, d_k], v [batch, H, d_v], β [batch, H],
        α [batch, H] (one decay per head) or [batch, H, d_k] (per key channel, Kimi's KDA)."""
        q, k, v, alpha = inputs["q"], inputs["k"], inputs["v"], inputs["alpha"]
        alpha = alpha[..., None] if alpha.ndim == k.ndim else alpha[..., None, None]
        decayed = alpha * state["state"]  # D_t S_{t−1}  [batch, H, d_k, d_v]
        recalled = (decayed * k[..., None]).sum(-2)  # α_t S_{t−1}ᵀ k_t  [batch, H, d_v]
        delta = inputs["beta"][..., None] * (v - recalled)  # β_t (v_t − α_t S_{t−1}ᵀ k_t)
        s = emit("state", decayed + k[..., None] * delta[..., None, :])
        emit("o", (s * q[..., None]).sum(-2))  # S_tᵀ q_t  [batch, H, d_v]
        return {"state": s}

    @staticmethod
    def _state_at(values: Mapping[str, Tensor], t: int) -> State:
        return {"state": values["state"][:, t]}

    def _chunked(self, inputs: Mapping[str, Tensor], s0: Tensor, wanted: set[str]) -> tuple[dict[str, Tensor], State]:
        """The chunked UT-transform form over [batch, pos, H, ...] inputs from state s0."""
        heads_first = [inputs[n].transpose(1, 2) for n in ("q", "k", "v", "log_alpha", "beta")]
        self.last_kernel = f"chunked gated delta rule (chunk {self.chunk_size})"
        o, s = chunked_delta_rule(*heads_first, s0, chunk_size=self.chunk_size, return_states="state" in wanted)
        values = {"o": o.transpose(1, 2)}  # [batch, pos, H, d_v]
        if "state" in wanted:
            values["state"] = s.transpose(1, 2)  # [batch, pos, H, d_k, d_v]
            return values, {"state": values["state"][:, -1]}
        return values, {"state": s}

    def short_conv(self, qkv: Tensor, conv_state: Tensor, conv1d: nn.Conv1d) -> tuple[Tensor, Tensor]:
        """SiLU of the causal depthwise conv over [conv state, qkv]: qkv [batch, pos, d_qkv] -> (mixed
        [batch, pos, d_qkv], the new conv state [batch, d_qkv, d_conv − 1])."""
        padded = torch.cat([conv_state, qkv.transpose(1, 2)], dim=-1)  # [batch, d_qkv, k−1+pos]
        new_conv = padded[..., padded.shape[-1] - (self.sizes["d_conv"] - 1):]
        conv = F.conv1d(padded.to(conv1d.weight.dtype), conv1d.weight, conv1d.bias, groups=self.sizes["d_qkv"])
        return F.silu(conv).transpose(1, 2).to(qkv.dtype), new_conv

    def hooked_decay(self, log_alpha: Tensor) -> tuple[Tensor, Tensor]:
        """log α [batch, pos, H(, d_k)] -> (α through its hook, log α): the library's log α unless a hook
        changed α; an α edited to 0 stays finite in the chunked form."""
        unedited = log_alpha.exp()
        alpha = self.hook_alpha(unedited.clone())
        return alpha, torch.where(alpha == unedited, log_alpha, torch.log(alpha).clamp(min=-1e3))

    def recur(self, inputs: Mapping[str, Tensor], s0: Tensor, fused: bool) -> tuple[Tensor, Tensor]:
        """The delta rule over inputs q, k, v, alpha, beta, log_alpha [batch, pos, H, ...] from S_{-1} = s0:
        (o [batch, pos, H, d_v], S_last), the chunked form on the fused path, with the state and o hooked
        and edits replayed from their position (linear-time edit route)."""
        values, final = run_recurrence(
            self._step, inputs, {"state": s0}, self.hook_points(("state", "o")), self._state_at, ("state",),
            needed=("o",),
            first_pass=(lambda wanted: self._chunked(inputs, s0, wanted)) if fused else None,
            segment_pass=(lambda wanted, start, stop, before: self._chunked(
                {name: value[:, start:stop] for name, value in inputs.items()}, before["state"], wanted,
            )) if fused else None,
        )
        return values["o"], final["state"]

    def gated_output(self, o: Tensor, gate: Tensor, norm: nn.Module, out_proj: nn.Module, dtype: torch.dtype) -> Tensor:
        """out = W_o (RMSNorm(o) ⊙ w ⊙ gate) per head, normed and out hooked; o, gate [batch, pos, H, d_v]."""
        weight = norm.weight.to(o.dtype)
        normed = self.hook_normed(weight * rms_normalize(o, norm.variance_epsilon) * gate)
        return self.hook_out(out_proj(normed.flatten(2).to(dtype)))  # [batch, pos, d_model]

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf, sz = self.hf, self.sizes
        batch, pos = x_in.shape[:2]
        x_in = mask_positions(x_in, mask)
        query, key, value, z, b, a = hf.fix_query_key_value_ordering(hf.in_proj_qkvz(x_in), hf.in_proj_ba(x_in))
        qkv = self.hook_qkv(torch.cat([t.reshape(batch, pos, -1) for t in (query, key, value)], dim=-1))
        mixed, new_conv = self.short_conv(qkv, state["conv"], hf.conv1d)  # [batch, pos, d_qkv]
        key_dim = sz["n_k_heads"] * sz["d_k"]
        q_part, k_part, v_part = mixed.split([key_dim, key_dim, sz["n_v_heads"] * sz["d_v"]], dim=-1)
        q = self.hook_q(l2_normalize(q_part.reshape(batch, pos, -1, sz["d_k"])) * sz["d_k"] ** -0.5)
        k = self.hook_k(l2_normalize(k_part.reshape(batch, pos, -1, sz["d_k"])))
        v = self.hook_v(v_part.reshape(batch, pos, -1, sz["d_v"]).to(q.dtype))  # [batch, pos, H, d_v]
        beta = self.hook_beta(torch.sigmoid(b.to(q.dtype)))  # [batch, pos, H]
        alpha, log_alpha = self.hooked_decay(-hf.A_log.to(q.dtype).exp() * F.softplus(a.to(q.dtype) + hf.dt_bias))
        inputs = {"q": self.per_value_head(q), "k": self.per_value_head(k), "v": v, "alpha": alpha,
                  "beta": beta, "log_alpha": log_alpha}
        o, final = self.recur(inputs, state["state"].to(q.dtype), fused)
        gate = self.hook_gate(F.silu(z.to(q.dtype)))  # [batch, pos, H, d_v]
        out = self.gated_output(o, gate, hf.norm, hf.out_proj, x_in.dtype)  # [batch, pos, d_model]
        return out, {"conv": new_conv, "state": final.to(x_in.dtype)}


class HookedGatedAttention(KvCacheMixer):
    """`transformers` Qwen3NextAttention (GQA with q/k RMSNorm, partial RoPE and a sigmoid output gate), hooked.

    Its state is the rotated keys and values read so far (the library's KV cache), of any length.
    """

    quantities = ("q", "k", "v", "pattern", "z", "gate", "out")
    state_names = ("k", "v")

    def __init__(self, hf_attention: nn.Module, rotary: nn.Module, sizes: Mapping[str, int]):
        super().__init__(sizes)
        self.hf = hf_attention  # shares q_proj, k_proj, v_proj, o_proj, q_norm, k_norm
        self.rotary = rotary  # the model's rotary embedding (buffers only)

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "q": (("batch", "pos", "n_heads", "d_head"), "queries after q_norm, before RoPE"),
            "k": (("batch", "pos", "n_kv_heads", "d_head"), "keys after k_norm, before RoPE"),
            "v": (("batch", "pos", "n_kv_heads", "d_head"), "values"),
            "pattern": (("batch", "pos", "n_heads", "key_pos"),
                        "attention weights over the cached keys then this call's keys"),
            "z": (("batch", "pos", "n_heads", "d_head"), "pattern-weighted values per head"),
            "gate": (("batch", "pos", "n_heads", "d_head"), "output gate σ(W_g x_t)"),
            "out": (RESID, "layer output W_o (z_t ⊙ gate_t)"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {
            "k": (("batch", "n_kv_heads", "past", "d_head"), "the rotated keys read so far (KV cache)"),
            "v": (("batch", "n_kv_heads", "past", "d_head"), "the values read so far (KV cache)"),
        }

    def _norm(self, x: Tensor, norm: nn.Module) -> Tensor:
        return (rms_normalize(x, norm.eps) * (1.0 + norm.weight.to(working_dtype(x)))).to(x.dtype)

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf, sz = self.hf, self.sizes
        batch, pos = x_in.shape[:2]
        heads, kv_heads, d_head = sz["n_heads"], sz["n_kv_heads"], sz["d_head"]
        self.last_kernel = "full attention (no recurrence)"
        query, gate = hf.q_proj(x_in).view(batch, pos, heads, 2 * d_head).chunk(2, dim=-1)
        q = self.hook_q(self._norm(query, hf.q_norm))  # [batch, pos, n_heads, d_head]
        k = self.hook_k(self._norm(hf.k_proj(x_in).view(batch, pos, kv_heads, d_head), hf.k_norm))
        v = self.hook_v(hf.v_proj(x_in).view(batch, pos, kv_heads, d_head))
        q, k = self.rotate_at(q, k, v, state["k"].shape[2])
        z, cache = self.attend(q, k, v, state, mask, hf.scaling)  # z [batch, pos, n_heads, d_head]
        gate = self.hook_gate(torch.sigmoid(gate))
        out = self.hook_out(hf.o_proj((z * gate).reshape(batch, pos, -1)))  # [batch, pos, d_model]
        return out, cache


class HookedSparseMoe(HookedRouting):
    """`transformers` Qwen3NextSparseMoeBlock with its routing hooked: the router's logits, the chosen
    experts and their weights (an edit to the logits re-routes); the experts themselves are the library's."""

    def __init__(self, hf_moe: nn.Module):
        super().__init__(hf_moe)  # shares the router, the experts, the shared expert and its gate
        self.hook_experts_out = ScopedHookPoint()
        self.hook_shared_out = ScopedHookPoint()

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "mlp.hook_router_logits": (("batch", "pos", "n_experts"), "router logits W_r x_t"),
            "mlp.hook_expert_index": (("batch", "pos", "top_k"),
                                      "the chosen experts' indices (whole numbers in the model's float dtype)"),
            "mlp.hook_expert_weights": (("batch", "pos", "top_k"), "the chosen experts' weights (renormalised "
                                        "softmax probabilities where the config says so)"),
            "mlp.hook_experts_out": (RESID, "weighted sum of the chosen experts' outputs"),
            "mlp.hook_shared_out": (RESID, "shared expert output times its sigmoid gate"),
        }

    def forward(self, x: Tensor) -> Tensor:
        hf = self.hf
        batch, pos, d_model = x.shape
        router = hf.gate
        logits = self.hook_router_logits(F.linear(x, router.weight))  # [batch, pos, n_experts]
        weights, index = softmax_top_k(logits, router.top_k, router.norm_topk_prob)  # [batch, pos, top_k]
        index, weights = self.hooked_choice(index, weights, logits.dtype)
        flat = x.reshape(-1, d_model)
        experts = hf.experts(flat, index.reshape(-1, router.top_k), weights.reshape(-1, router.top_k))
        experts = self.hook_experts_out(experts.reshape(batch, pos, d_model))
        shared = self.hook_shared_out(torch.sigmoid(hf.shared_expert_gate(x)) * hf.shared_expert(x))
        return experts + shared


def is_mixture_of_experts(mlp: nn.Module) -> bool:
    return all(hasattr(mlp, name) for name in ("gate", "experts", "shared_expert", "shared_expert_gate"))


class Qwen3NextBlock(RoutedMlpBlock):
    """resid_mid = resid_pre + mixer(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid)).

    A dense MLP is the library's module; a sparse mixture of experts has its routing hooked.
    """

    def __init__(self, hf_layer: nn.Module, mixer: AdapterMixer):
        mlp = HookedSparseMoe(hf_layer.mlp) if is_mixture_of_experts(hf_layer.mlp) else hf_layer.mlp
        super().__init__(OffsetRmsNorm(hf_layer.input_layernorm), mixer,
                         OffsetRmsNorm(hf_layer.post_attention_layernorm), mlp)


def gated_delta_sizes(cfg: PretrainedConfig) -> dict[str, int]:
    """Dimension sizes of a gated-delta-rule hybrid's config (Qwen3-Next, OLMo-Hybrid): the delta-rule
    layers' heads and conv, and the attention layers' head counts."""
    return {
        "d_model": cfg.hidden_size, "d_vocab": cfg.vocab_size,
        "n_k_heads": cfg.linear_num_key_heads, "n_v_heads": cfg.linear_num_value_heads,
        "d_k": cfg.linear_key_head_dim, "d_v": cfg.linear_value_head_dim,
        "d_inner": cfg.linear_num_value_heads * cfg.linear_value_head_dim,
        "d_qkv": 2 * cfg.linear_num_key_heads * cfg.linear_key_head_dim
        + cfg.linear_num_value_heads * cfg.linear_value_head_dim,
        "d_conv": cfg.linear_conv_kernel_dim, "d_conv-1": cfg.linear_conv_kernel_dim - 1,
        "n_heads": cfg.num_attention_heads, "n_kv_heads": cfg.num_key_value_heads,
    }


class HookedQwen3Next(HookedHybridLM):
    """Qwen3NextForCausalLM under the hook contract: Gated DeltaNet and gated attention layers."""

    family = "qwen3_next"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        sizes = {
            **gated_delta_sizes(cfg),
            "d_head": getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads),
            "n_experts": cfg.num_experts, "top_k": cfg.num_experts_per_tok,
        }
        blocks = [Qwen3NextBlock(layer, self._mixer(layer, kind, backbone.rotary_emb, sizes))
                  for layer, kind in zip(backbone.layers, cfg.layer_types, strict=True)]
        super().__init__(hf_model, sizes, blocks, ln_final=OffsetRmsNorm(backbone.norm),
                         embed=backbone.embed_tokens, unembed=hf_model.lm_head, path=path)
        self.layer_types = list(cfg.layer_types)
        self.setup()

    @staticmethod
    def _mixer(layer: nn.Module, kind: str, rotary: nn.Module, sizes: Mapping[str, int]) -> AdapterMixer:
        if kind == "linear_attention":
            return HookedGatedDeltaNet(layer.linear_attn, sizes)
        if kind == "full_attention":
            return HookedGatedAttention(layer.self_attn, rotary, sizes)
        raise ValueError(f"unknown Qwen3-Next layer type {kind!r}; expected 'linear_attention' or 'full_attention'")


__all__ = ["HookedSparseMoe", "HookedGatedAttention", "HookedGatedDeltaNet", "HookedQwen3Next", "OffsetRmsNorm",
           "gated_delta_sizes"]
