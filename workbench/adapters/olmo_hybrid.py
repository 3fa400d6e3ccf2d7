"""OLMo-Hybrid from `transformers`: gated delta-rule layers (pre-norm blocks) interleaved with OLMo-2-style
attention layers (post-norm blocks: the attention and MLP outputs are normalised before they are added),
every layer with a dense MLP.

The delta-rule layer is Qwen3-Next's (`HookedGatedDeltaNet`: same step, chunked pass and edit route) with
separate q/k/v projections, no conv bias, β_t = 2σ(W_b x_t) when the config allows negative eigenvalues
(β ∈ (0, 2), so I − β k kᵀ can flip k's direction) and the output gate SiLU(W_g x_t). The attention layer
normalises q and k over all heads at once (RMSNorm of the whole projection), applies RoPE when the config has
it (the released checkpoints use none) and has no output gate; its state is the KV cache.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import AdapterMixer, AdapterMlpBlock, HookedHybridLM, HookedNorm, mask_positions
from workbench.adapters.kimi_linear import RmsNorm
from workbench.adapters.qwen3_next import (
    BPV,
    BPVD,
    HookedGatedAttention,
    HookedGatedDeltaNet,
    gated_delta_sizes,
    l2_normalize,
)
from workbench.models.blocks import ResidualBlock
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import State
from workbench.models.specs import RESID, HookSpec


class HookedOlmoDeltaNet(HookedGatedDeltaNet):
    """`transformers` OlmoHybridGatedDeltaNet recomputed with every delta-rule quantity hooked."""

    def hook_specs(self) -> dict[str, HookSpec]:
        beta = "2σ(W_b x_t) (negative eigenvalues allowed)" if self.hf.allow_neg_eigval else "σ(W_b x_t)"
        return {**super().hook_specs(),
                "qkv": (("batch", "pos", "d_qkv"), "(W_q x, W_k x, W_v x) before the conv"),
                "beta": (BPV, f"writing strength β_t = {beta}"),
                "gate": (BPVD, "output gate SiLU(W_g x_t)")}

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf, sz = self.hf, self.sizes
        batch, pos = x_in.shape[:2]
        x_in = mask_positions(x_in, mask)
        qkv = self.hook_qkv(torch.cat([hf.q_proj(x_in), hf.k_proj(x_in), hf.v_proj(x_in)], dim=-1))
        mixed, new_conv = self.short_conv(qkv, state["conv"], hf.conv1d)  # [batch, pos, d_qkv]
        key_dim = sz["n_k_heads"] * sz["d_k"]
        q_part, k_part, v_part = mixed.split([key_dim, key_dim, sz["n_v_heads"] * sz["d_v"]], dim=-1)
        q = self.hook_q(l2_normalize(q_part.reshape(batch, pos, -1, sz["d_k"])) * sz["d_k"] ** -0.5)
        k = self.hook_k(l2_normalize(k_part.reshape(batch, pos, -1, sz["d_k"])))
        v = self.hook_v(v_part.reshape(batch, pos, -1, sz["d_v"]).to(q.dtype))  # [batch, pos, H, d_v]
        beta = torch.sigmoid(hf.b_proj(x_in).to(q.dtype)) * (2.0 if hf.allow_neg_eigval else 1.0)
        beta = self.hook_beta(beta)  # [batch, pos, H]
        log_alpha = -hf.A_log.to(q.dtype).exp() * F.softplus(hf.a_proj(x_in).to(q.dtype) + hf.dt_bias.to(q.dtype))
        alpha, log_alpha = self.hooked_decay(log_alpha)
        inputs = {"q": self.per_value_head(q), "k": self.per_value_head(k), "v": v, "alpha": alpha,
                  "beta": beta, "log_alpha": log_alpha}
        o, final = self.recur(inputs, state["state"].to(q.dtype), fused)
        gate = self.hook_gate(F.silu(hf.g_proj(x_in).reshape(batch, pos, -1, sz["d_v"]).to(q.dtype)))
        out = self.gated_output(o, gate, hf.o_norm, hf.o_proj, x_in.dtype)  # [batch, pos, d_model]
        return out, {"conv": new_conv, "state": final.to(x_in.dtype)}


class HookedOlmoAttention(HookedGatedAttention):
    """`transformers` OlmoHybridAttention (GQA, q/k RMSNorm over all heads, optional RoPE, no gate), hooked.

    Its state is the rotated keys and values read so far (the library's KV cache), of any length.
    """

    quantities = ("q", "k", "v", "pattern", "z", "out")

    def hook_specs(self) -> dict[str, HookSpec]:
        specs = super().hook_specs()
        rope = "before RoPE" if self.rotary is not None else "(no RoPE in this config)"
        return {
            "q": (("batch", "pos", "n_heads", "d_head"), f"queries after q_norm (over all heads), {rope}"),
            "k": (("batch", "pos", "n_kv_heads", "d_head"), f"keys after k_norm (over all heads), {rope}"),
            "v": specs["v"], "pattern": specs["pattern"], "z": specs["z"],
            "out": (RESID, "attention output W_o z_t (the block normalises it before adding)"),
        }

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf, sz = self.hf, self.sizes
        batch, pos = x_in.shape[:2]
        heads, kv_heads, d_head = sz["n_heads"], sz["n_kv_heads"], sz["d_head"]
        self.last_kernel = "full attention (no recurrence)"
        q = self.hook_q(RmsNorm(hf.q_norm)(hf.q_proj(x_in)).view(batch, pos, heads, d_head))
        k = self.hook_k(RmsNorm(hf.k_norm)(hf.k_proj(x_in)).view(batch, pos, kv_heads, d_head))
        v = self.hook_v(hf.v_proj(x_in).view(batch, pos, kv_heads, d_head))
        q, k = self.rotate_at(q, k, v, state["k"].shape[2])
        z, cache = self.attend(q, k, v, state, mask, hf.scaling)  # z [batch, pos, n_heads, d_head]
        out = self.hook_out(hf.o_proj(z.reshape(batch, pos, -1)))  # [batch, pos, d_model]
        return out, cache


class PostNormBlock(ResidualBlock):
    """OLMo-2's block: resid_mid = resid_pre + norm(mixer(resid_pre)); resid_post = resid_mid + norm(mlp(resid_mid)).

    No input norm (`ln1`, `ln2` absent); the output norms are hooked as `ln_mixer_out` and `ln_mlp_out`.
    """

    def __init__(self, hf_layer: nn.Module, mixer: AdapterMixer):
        super().__init__()
        self.mixer = mixer
        self.ln_mixer_out = HookedNorm(RmsNorm(hf_layer.post_attention_layernorm))
        self.mlp = hf_layer.mlp
        self.ln_mlp_out = HookedNorm(RmsNorm(hf_layer.post_feedforward_layernorm))
        for name in ("hook_resid_pre", "hook_mixer_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"):
            setattr(self, name, ScopedHookPoint())

    def hook_specs(self, layer: int) -> dict[str, HookSpec]:
        return {
            "hook_resid_pre": (RESID, f"residual stream entering block {layer}"),
            **self.mixer.block_hook_specs(),
            "ln_mixer_out.hook_normalized": (RESID, "normalised attention output"),
            "hook_mixer_out": (RESID, "normalised attention output added to the residual"),
            "hook_resid_mid": (RESID, "residual after the attention"),
            "ln_mlp_out.hook_normalized": (RESID, "normalised MLP output"),
            "hook_mlp_out": (RESID, "normalised MLP output added to the residual"),
            "hook_resid_post": (RESID, f"residual stream leaving block {layer}"),
        }

    def forward(self, resid: Tensor, state: Mapping[str, Tensor] | None, path: ExecutionPath,
                mask: Tensor | None = None) -> tuple[Tensor, State]:
        resid = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        mixed, new_state = self.mixer(resid, state, path, mask)
        resid = self.hook_resid_mid(resid + self.hook_mixer_out(self.ln_mixer_out(mixed)))
        resid = resid + self.hook_mlp_out(self.ln_mlp_out(self.mlp(resid)))
        return self.hook_resid_post(resid), new_state


class PreNormBlock(AdapterMlpBlock):
    """The delta-rule layers' block: resid_mid = resid_pre + mixer(ln1(resid_pre)); resid_post = resid_mid +
    mlp(ln2(resid_mid)), the MLP the library's."""

    def __init__(self, hf_layer: nn.Module, mixer: AdapterMixer):
        super().__init__(RmsNorm(hf_layer.input_layernorm), mixer, RmsNorm(hf_layer.post_attention_layernorm),
                         hf_layer.mlp)

    def extra_hook_specs(self) -> dict[str, HookSpec]:
        return {
            "hook_resid_mid": (RESID, "residual after the delta-rule layer"),
            "ln2.hook_normalized": (RESID, "normalised input to the MLP"),
            "hook_mlp_out": (RESID, "MLP output added to the residual"),
        }


class HookedOlmoHybrid(HookedHybridLM):
    """OlmoHybridForCausalLM under the hook contract: gated delta-rule and attention layers."""

    family = "olmo_hybrid"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        sizes = {
            **gated_delta_sizes(cfg),
            "d_head": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
        }
        blocks = [self._block(layer, kind, backbone.rotary_emb, sizes)
                  for layer, kind in zip(backbone.layers, cfg.layer_types, strict=True)]
        super().__init__(hf_model, sizes, blocks, ln_final=RmsNorm(backbone.norm),
                         embed=backbone.embed_tokens, unembed=hf_model.lm_head, path=path)
        self.layer_types = list(cfg.layer_types)
        self.setup()

    @staticmethod
    def _block(layer: nn.Module, kind: str, rotary: nn.Module | None, sizes: Mapping[str, int]) -> ResidualBlock:
        if kind == "linear_attention":
            return PreNormBlock(layer, HookedOlmoDeltaNet(layer.linear_attn, sizes))
        if kind == "full_attention":
            return PostNormBlock(layer, HookedOlmoAttention(layer.self_attn, rotary, sizes))
        raise ValueError(f"unknown OLMo-Hybrid layer type {kind!r}; expected 'linear_attention' or 'full_attention'")


__all__ = ["HookedOlmoAttention", "HookedOlmoDeltaNet", "HookedOlmoHybrid", "PostNormBlock"]
