"""LFM2 from `transformers` (Liquid AI 2025): gated short convolutions interleaved with attention.

The convolution layer, per channel, with the library's names:

    (B_t, C_t, x_t) = W_in h_t                         (hook_B, hook_C input and output gates; hook_x)
    v_t = B_t ⊙ x_t                                    (hook_Bx, the conv's input)
    S_t = [v_{t−L+2}, …, v_t]                          (hook_state: the last L − 1 inputs, a shift register)
    c_t = Σ_{j<L} w_j v_{t−L+1+j} + b = w · [S_{t−1}, v_t] + b     (hook_conv)
    y_t = C_t ⊙ c_t,  out = W_out y_t                  (hook_y, hook_out)

so y_t = Σ_{s=t−L+1..t} C_t w_{t−s} B_s x_s: a linear recurrence over a window of L tokens, whose exact
implicit map (gates held) is `workbench.analysis.implicit_attention.short_conv`. Attention layers are
`HookedKvAttention` with LFM2's per-head q/k RMSNorms and RoPE.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import AdapterMixer, AdapterMlpBlock, HookedHybridLM, mask_positions
from workbench.adapters.kv_attention import HookedKvAttention
from workbench.adapters.rms_norm import FullPrecisionRMSNorm, rms_norm
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import Emit, State, run_recurrence
from workbench.models.specs import RESID, HookSpec

__all__ = ["HookedLfm2", "HookedShortConv"]

BPD = ("batch", "pos", "d_model")


class HookedShortConv(AdapterMixer):
    """`transformers` Lfm2ShortConv recomputed with its gates, conv input, window state and conv hooked."""

    quantities = ("B", "C", "x", "Bx", "state", "conv", "y", "out")
    state_names = ("state",)

    def __init__(self, hf_conv: nn.Module, sizes: Mapping[str, int]):
        super().__init__(sizes)
        self.hf = hf_conv  # shares in_proj, conv, out_proj

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "B": (BPD, "input gate B_t (first third of W_in h_t)"),
            "C": (BPD, "output gate C_t (second third of W_in h_t)"),
            "x": (BPD, "input x_t (last third of W_in h_t)"),
            "Bx": (BPD, "the convolution's input v_t = B_t ⊙ x_t"),
            "state": (("batch", "pos", "d_model", "d_conv-1"),
                      "conv window S_t = [v_{t−L+2}, …, v_t], oldest first (a shift register)"),
            "conv": (BPD, "c_t = w · [S_{t−1}, v_t] + b, the depthwise causal convolution"),
            "y": (BPD, "gated output y_t = C_t ⊙ c_t"),
            "out": (RESID, "layer output W_out y_t"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {"state": (("batch", "d_model", "d_conv-1"), "the last L − 1 conv inputs v, oldest first")}

    @property
    def weight(self) -> Tensor:
        return self.hf.conv.weight[:, 0, :]  # [d_model, L]

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        """One token: shift v_t into the window and convolve. v [batch, d], window [batch, d, L − 1]."""
        window = torch.cat([state["state"], inputs["Bx"][..., None]], dim=-1)  # [batch, d, L]
        conv = (window * self.weight).sum(-1)
        emit("conv", conv if self.hf.conv.bias is None else conv + self.hf.conv.bias)
        return {"state": emit("state", window[..., 1:])}

    @staticmethod
    def _state_at(values: Mapping[str, Tensor], t: int) -> State:
        return {"state": values["state"][:, t]}

    def _convolve(self, v: Tensor, before: Tensor, wanted: set[str]) -> tuple[dict[str, Tensor], State]:
        """The whole range at once: v [batch, pos, d] from the window `before` [batch, d, L − 1]."""
        self.last_kernel = "depthwise conv1d"
        padded = torch.cat([before, v.transpose(1, 2)], dim=-1)  # [batch, d, L−1+pos]
        conv = F.conv1d(padded, self.hf.conv.weight, self.hf.conv.bias, groups=self.sizes["d_model"])
        values = {"conv": conv.transpose(1, 2)}  # [batch, pos, d]
        final = padded[..., padded.shape[-1] - (self.sizes["d_conv"] - 1):]
        if "state" in wanted:  # window after t: padded[t+1 .. t+L−1]
            windows = padded.unfold(-1, self.sizes["d_conv"] - 1, 1)[:, :, 1:]  # [batch, d, pos, L−1]
            values["state"] = windows.transpose(1, 2)  # [batch, pos, d, L−1]
        return values, {"state": final}

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf, d = self.hf, self.sizes["d_model"]
        x_in = mask_positions(x_in, mask)
        w_B, w_C, w_x = hf.in_proj.weight.split(d, dim=0)  # slices, so a hook may edit each in place
        b_B, b_C, b_x = (None, None, None) if hf.in_proj.bias is None else hf.in_proj.bias.split(d)
        B = self.hook_B(F.linear(x_in, w_B, b_B))  # [batch, pos, d]
        C = self.hook_C(F.linear(x_in, w_C, b_C))
        x = self.hook_x(F.linear(x_in, w_x, b_x))
        inputs = {"Bx": self.hook_Bx(B * x)}
        values, final = run_recurrence(
            self._step, inputs, {"state": state["state"]}, self.hook_points(("state", "conv")), self._state_at,
            ("state",), needed=("conv",),
            first_pass=(lambda wanted: self._convolve(inputs["Bx"], state["state"], wanted)) if fused else None,
            segment_pass=(lambda wanted, start, stop, before: self._convolve(
                inputs["Bx"][:, start:stop], before["state"], wanted)) if fused else None,
        )
        y = self.hook_y(C * values["conv"])  # [batch, pos, d]
        return self.hook_out(hf.out_proj(y)), {"state": final["state"]}


def _head_norm(norm: nn.Module):
    """LFM2's per-head q/k RMSNorm, in float64 for a float64 model."""
    return lambda x: rms_norm(x, norm.weight, norm.variance_epsilon)


class Lfm2Block(AdapterMlpBlock):
    """resid_mid = resid_pre + mixer(operator_norm(resid_pre)); resid_post = resid_mid + MLP(ffn_norm(resid_mid))."""

    def __init__(self, hf_layer: nn.Module, mixer: AdapterMixer):
        super().__init__(FullPrecisionRMSNorm(hf_layer.operator_norm), mixer,
                         FullPrecisionRMSNorm(hf_layer.ffn_norm), hf_layer.feed_forward)

    def extra_hook_specs(self) -> dict[str, HookSpec]:
        return {
            "hook_resid_mid": (RESID, "residual after the token mixer"),
            "ln2.hook_normalized": (RESID, "normalised input to the MLP"),
            "hook_mlp_out": (RESID, "MLP output added to the residual"),
        }


class HookedLfm2(HookedHybridLM):
    """Lfm2ForCausalLM under the hook contract: gated short-convolution and attention layers."""

    family = "lfm2"
    recurrent_kind = "conv"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        kinds = list(cfg.layer_types)  # "conv" or "full_attention" per layer
        attention = next((layer.self_attn for layer, kind in zip(backbone.layers, kinds, strict=True)
                          if kind != "conv"), None)
        sizes = {
            "d_model": cfg.hidden_size, "d_vocab": cfg.vocab_size,
            "d_conv": cfg.conv_L_cache, "d_conv-1": cfg.conv_L_cache - 1,
            "n_heads": cfg.num_attention_heads, "n_kv_heads": cfg.num_key_value_heads,
            "d_head": attention.head_dim if attention is not None else cfg.hidden_size // cfg.num_attention_heads,
        }
        blocks = [Lfm2Block(layer, self._mixer(layer, kind, backbone.rotary_emb, sizes))
                  for layer, kind in zip(backbone.layers, kinds, strict=True)]
        super().__init__(hf_model, sizes, blocks, ln_final=FullPrecisionRMSNorm(backbone.embedding_norm),
                         embed=backbone.embed_tokens, unembed=hf_model.lm_head, path=path)
        self.layer_types = kinds
        self.setup()

    @staticmethod
    def _mixer(layer: nn.Module, kind: str, rotary: nn.Module, sizes: Mapping[str, int]) -> AdapterMixer:
        if kind == "conv":
            return HookedShortConv(layer.conv, sizes)
        if kind == "full_attention":
            attn = layer.self_attn
            return HookedKvAttention(attn, sizes, out_proj=attn.out_proj, rotary=rotary,
                                     q_norm=_head_norm(attn.q_layernorm), k_norm=_head_norm(attn.k_layernorm))
        raise ValueError(f"unknown LFM2 layer type {kind!r}; expected 'conv' or 'full_attention'")
