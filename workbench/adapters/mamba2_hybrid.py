"""What the Mamba-2 hybrids share (Bamba, GraniteMoeHybrid, NemotronH, Falcon-H1, Zamba2): Mamba-2 layers
(the Mamba2 adapter's `HookedMamba2Mixer`, both paths) interleaved with softmax attention layers.

`HookedRopeAttention` is the plain GQA attention of these models (optional RoPE, the library's own
scaling), hooked TransformerLens-style; its state is the KV cache, so stepping, patching and
`generate` work as for the recurrent layers. `HybridBlock` is the pre-norm block with an optional
residual multiplier; `HookedMamba2Hybrid` is the model frame each family fills from its config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from workbench.adapters.base import AdapterMixer, AdapterMlpBlock, HookedHybridLM
from workbench.adapters.qwen3_next import HookedGatedAttention
from workbench.models.specs import RESID, HookSpec

BPQ = ("batch", "pos", "n_attn_heads", "d_attn_head")
BPKV = ("batch", "pos", "n_kv_heads", "d_attn_head")
KV_CACHE = ("batch", "n_kv_heads", "past", "d_attn_head")


class HookedRopeAttention(HookedGatedAttention):
    """`transformers` GQA attention (Llama-style: q/k/v/o projections, optional RoPE, softmax), hooked.

    Dimension names are `n_attn_heads` / `d_attn_head` so they never collide with the Mamba-2 layers'
    `n_heads` / `d_head`. Its state is the rotated keys and values read so far, of any length.
    """

    quantities = ("q", "k", "v", "pattern", "z", "out")

    def __init__(self, hf_attention: nn.Module, rotary: nn.Module | None, sizes: Mapping[str, int],
                 key_scale: float = 1.0):
        super().__init__(hf_attention, rotary, sizes)  # shares q_proj, k_proj, v_proj, o_proj
        self.key_scale = key_scale  # Falcon-H1's key multiplier (1 elsewhere)

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "q": (BPQ, "queries W_q x_t, before RoPE"),
            "k": (BPKV, "keys W_k x_t (times Falcon-H1's key multiplier), before RoPE"),
            "v": (BPKV, "values W_v x_t"),
            "pattern": (("batch", "pos", "n_attn_heads", "key_pos"),
                        "attention weights over the cached keys then this call's keys"),
            "z": (BPQ, "pattern-weighted values per head"),
            "out": (RESID, "layer output W_o z_t"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {
            "k": (KV_CACHE, "the rotated keys read so far (KV cache)"),
            "v": (KV_CACHE, "the values read so far (KV cache)"),
        }

    def project(self, x_in: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [batch, pos, d_in] -> q [batch, pos, n_heads · d_head], k, v [batch, pos, n_kv_heads · d_head]
        (Zamba2 adds its per-depth LoRA adapters here)."""
        return self.hf.q_proj(x_in), self.hf.k_proj(x_in), self.hf.v_proj(x_in)

    def mix(self, x_in: Tensor, state: Mapping[str, Tensor], fused: bool,
            mask: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        hf, sz = self.hf, self.sizes
        batch, pos = x_in.shape[:2]
        heads, kv_heads, d_head = sz["n_attn_heads"], sz["n_kv_heads"], sz["d_attn_head"]
        self.last_kernel = "full attention (no recurrence)"
        q, k, v = self.project(x_in)
        q = self.hook_q(q.view(batch, pos, heads, d_head))  # [batch, pos, n_heads, d_head]
        k = k.view(batch, pos, kv_heads, d_head)
        k = self.hook_k(k * self.key_scale if self.key_scale != 1.0 else k)
        v = self.hook_v(v.view(batch, pos, kv_heads, d_head))
        q, k = self.rotate_at(q, k, v, state["k"].shape[2])
        z, cache = self.attend(q, k, v, state, mask, hf.scaling)  # z [batch, pos, n_heads, d_head]
        out = self.hook_out(hf.o_proj(z.reshape(batch, pos, -1)))  # [batch, pos, d_model]
        return out, cache


def attention_sizes(cfg: object, attention: nn.Module) -> dict[str, int]:
    """The attention layers' dimension names from a library attention module and its config."""
    return {"n_attn_heads": cfg.num_attention_heads, "n_kv_heads": cfg.num_key_value_heads,
            "d_attn_head": attention.head_dim}


def mamba2_sizes(mixer: nn.Module) -> dict[str, int]:
    """The Mamba-2 layers' dimension names (as the Mamba2 adapter's) from a library mixer."""
    return {
        "d_inner": mixer.intermediate_size, "n_heads": mixer.num_heads, "d_head": mixer.head_dim,
        "n_groups": mixer.n_groups, "d_state": mixer.ssm_state_size, "d_conv": mixer.conv_kernel_size,
        "d_conv-1": mixer.conv_kernel_size - 1, "d_conv_channels": mixer.conv_dim,
    }


class HybridBlock(AdapterMlpBlock):
    """resid_mid = resid_pre + m · mixer(ln1(resid_pre)); resid_post = resid_mid + m · mlp(ln2(resid_mid)).

    m is the residual multiplier (1 but for Granite); `hook_mixer_out` and `hook_mlp_out` hold what is
    added to the residual, m included. `mlp_specs` are the MLP's own hooks (a mixture of experts').
    """

    def __init__(self, ln1: nn.Module, mixer: AdapterMixer, ln2: nn.Module, mlp: nn.Module,
                 residual_multiplier: float = 1.0, mlp_specs: Mapping[str, HookSpec] | None = None):
        super().__init__(ln1, mixer, ln2, mlp)
        self.residual_multiplier = residual_multiplier
        self.mlp_specs = dict(mlp_specs or {})

    def forward(self, resid: Tensor, state: Mapping[str, Tensor] | None, path: str,
                mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        m = self.residual_multiplier
        resid = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        mixed, new_state = self.mixer(self.ln1(resid), state, path, mask)
        resid = self.hook_resid_mid(resid + self.hook_mixer_out(mixed * m if m != 1.0 else mixed))
        mlp_out = self.mlp(self.ln2(resid))
        resid = resid + self.hook_mlp_out(mlp_out * m if m != 1.0 else mlp_out)
        return self.hook_resid_post(resid), new_state

    def extra_hook_specs(self) -> dict[str, HookSpec]:
        return {
            "hook_resid_mid": (RESID, "residual after the token mixer"),
            "ln2.hook_normalized": (RESID, "normalised input to the MLP"),
            **{f"mlp.{name}": spec for name, spec in self.mlp_specs.items()},
            "hook_mlp_out": (RESID, "MLP output added to the residual (times the residual multiplier)"),
        }


class ScaledEmbedding(nn.Module):
    """The library's token embedding times its embedding multiplier (Granite's μP scale)."""

    def __init__(self, embed: nn.Module, multiplier: float):
        super().__init__()
        self.embed = embed
        self.multiplier = multiplier

    @property
    def weight(self) -> Tensor:
        return self.embed.weight  # [d_vocab, d_model], the library's own parameter

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embed(tokens) * self.multiplier


class ScaledHead(nn.Module):
    """The library's unembedding times its multiplier (Falcon-H1) or divided by its logits scaling (Granite),
    so the logit lens decodes exactly."""

    def __init__(self, head: nn.Module, divisor: float = 1.0, multiplier: float = 1.0):
        super().__init__()
        self.head = head
        self.divisor = divisor
        self.multiplier = multiplier

    @property
    def weight(self) -> Tensor:
        return self.head.weight  # [d_vocab, d_model]

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(x)  # [batch, pos, d_vocab]
        logits = logits * self.multiplier if self.multiplier != 1.0 else logits
        return logits / self.divisor if self.divisor != 1.0 else logits


class HookedMamba2Hybrid(HookedHybridLM):
    """The frame of a Mamba-2 hybrid: blocks of Mamba-2 or attention mixers, each with its MLP.

    `layer_types[l]` is "mamba" or "attention"; `recurrent_layers` lists the Mamba-2 ones.
    """

    recurrent_kind = "mamba"

    def __init__(self, hf_model: nn.Module, sizes: Mapping[str, int], blocks: Sequence[nn.Module],
                 layer_types: Sequence[str], ln_final: nn.Module, embed: nn.Module, unembed: nn.Module,
                 path: str = "fused"):
        super().__init__(hf_model, sizes, blocks, ln_final=ln_final, embed=embed, unembed=unembed, path=path)
        self.layer_types = list(layer_types)


__all__ = ["HookedMamba2Hybrid", "HookedRopeAttention", "HybridBlock", "ScaledEmbedding", "ScaledHead",
           "attention_sizes", "mamba2_sizes"]
