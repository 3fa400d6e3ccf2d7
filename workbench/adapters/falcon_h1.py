"""Falcon-H1 from `transformers` (TII 2025): in every block a Mamba-2 mixer and a GQA attention read the same
normed input in parallel, each with its μP multipliers, and their sum joins the residual; then an MLP.

The block's mixer is the Mamba2 adapter's mixer (its in-projection scaled by the library's `mup_vector`,
its input by `ssm_in_multiplier`, its gated norm optional) holding the attention as `mixer.attention`
(hooks `mixer.attention.hook_q` ... ; keys times `key_multiplier`). The mixer's state is both: the conv
window and SSM state, and the KV cache.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from workbench.adapters.mamba2 import HookedMamba2Mixer
from workbench.adapters.mamba2_hybrid import (
    KV_CACHE,
    HookedMamba2Hybrid,
    HookedRopeAttention,
    HybridBlock,
    ScaledEmbedding,
    ScaledHead,
    attention_sizes,
    mamba2_sizes,
)
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import State
from workbench.models.specs import RESID, HookSpec


class HookedFalconH1Mixer(HookedMamba2Mixer):
    """Mamba-2 and attention in parallel on one input:
    out = m_ssm_out · mamba(m_ssm_in x) + m_attn_out · attention(m_attn_in x)."""

    quantities = (*HookedMamba2Mixer.quantities, "mamba_out", "attention_out")
    state_names = ("conv", "state", "k", "v")

    def __init__(self, hf_layer: nn.Module, rotary: nn.Module, sizes: Mapping[str, int]):
        super().__init__(hf_layer.mamba, sizes)
        self.attention = HookedRopeAttention(hf_layer.self_attn, rotary, sizes,
                                             key_scale=hf_layer.self_attn.key_multiplier)
        for name in ("k", "v"):  # the KV cache enters through this mixer's own hook_initial_k / _v
            delattr(self.attention, f"hook_initial_{name}")
        self.multipliers = (hf_layer.mamba.ssm_in_multiplier, hf_layer.ssm_out_multiplier,
                            hf_layer.attention_in_multiplier, hf_layer.attn_out_multiplier)
        self.past = 0

    def dimension_sizes(self, batch: int = 1, pos: int = 1) -> dict[str, int]:
        return {**super().dimension_sizes(batch, pos), "past": self.past, "key_pos": self.past + pos}

    def hook_specs(self) -> dict[str, HookSpec]:
        specs = super().hook_specs()
        specs["out"] = (RESID, "Mamba-2 output out_proj(normed_t)")
        return {**specs, "mamba_out": (RESID, "Mamba-2 output times ssm_out_multiplier"),
                "attention_out": (RESID, "attention output times attention_out_multiplier")}

    def block_hook_specs(self) -> dict[str, HookSpec]:
        specs = super().block_hook_specs()
        specs.update({f"mixer.attention.hook_{name}": spec for name, spec in self.attention.hook_specs().items()})
        return specs

    def state_specs(self) -> dict[str, HookSpec]:
        return {**super().state_specs(), "k": (KV_CACHE, "the rotated keys read so far (KV cache)"),
                "v": (KV_CACHE, "the values read so far (KV cache)")}

    def prepare_state(self, state: Mapping[str, Tensor] | None, x: Tensor) -> State:
        keys = None if state is None else state.get("k")
        self.past = keys.shape[2] if isinstance(keys, Tensor) and keys.ndim == 4 else 0
        return super().prepare_state(state, x)

    def forward(self, x: Tensor, state: Mapping[str, Tensor] | None = None, path: ExecutionPath = "fused",
                mask: Tensor | None = None) -> tuple[Tensor, State]:
        try:
            return super().forward(x, state, path, mask)
        finally:
            self.past = 0

    def _scale_projections(self, z: Tensor, xBC: Tensor, dt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each in-projection part times its slice of the library's `mup_vector`."""
        scale = self.hf.mup_vector.reshape(-1).to(z.dtype)  # [d_inner + d_conv_channels + n_heads]
        z_scale, xBC_scale, dt_scale = scale.split([z.shape[-1], xBC.shape[-1], dt.shape[-1]])
        return z * z_scale, xBC * xBC_scale, dt * dt_scale

    def _gated_norm(self, y: Tensor, gate: Tensor) -> Tensor:
        """As the library: y ⊙ SiLU(z) without the norm, or the grouped RMSNorm before or after the gate."""
        hf = self.hf
        if not hf.mamba_rms_norm:
            return y * gate
        if not hf.norm.norm_before_gate:
            return super()._gated_norm(y, gate)
        norm, groups = hf.norm, self.sizes["n_groups"]
        work = torch.promote_types(y.dtype, torch.float32)
        v = y.to(work).unflatten(-1, (groups, -1))  # [batch, pos, G, d_inner / G]
        v = (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)).flatten(-2)
        return (norm.weight.to(work) * v * gate.to(work)).to(y.dtype)

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        ssm_in, ssm_out, attn_in, attn_out = self.multipliers
        mamba, mamba_state = super().mix(x_in * ssm_in, {"conv": state["conv"], "state": state["state"]}, fused, mask)
        kernel = self.last_kernel
        attended, kv = self.attention.mix(x_in * attn_in, {"k": state["k"], "v": state["v"]}, fused, mask)
        self.last_kernel = kernel
        out = self.hook_mamba_out(mamba * ssm_out) + self.hook_attention_out(attended * attn_out)
        return out, {**mamba_state, **kv}


class HookedFalconH1(HookedMamba2Hybrid):
    """FalconH1ForCausalLM under the hook contract: parallel Mamba-2 and attention in every block."""

    family = "falcon_h1"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        first = backbone.layers[0]
        sizes = {"d_model": cfg.hidden_size, "d_vocab": cfg.vocab_size, **mamba2_sizes(first.mamba),
                 **attention_sizes(cfg, first.self_attn)}
        blocks = [HybridBlock(layer.input_layernorm, HookedFalconH1Mixer(layer, backbone.rotary_emb, sizes),
                              layer.pre_ff_layernorm, layer.feed_forward) for layer in backbone.layers]
        super().__init__(hf_model, sizes, blocks, ["mamba"] * len(blocks), ln_final=backbone.final_layernorm,
                         embed=ScaledEmbedding(backbone.embed_tokens, backbone.embedding_multiplier),
                         unembed=ScaledHead(hf_model.lm_head, multiplier=backbone.lm_head_multiplier), path=path)
        self.setup()


__all__ = ["HookedFalconH1", "HookedFalconH1Mixer"]
