"""RecurrentGemma (Griffin) from `transformers` (De et al. 2024, *Griffin: Mixing Gated Linear Recurrences
with Local Attention for Efficient Language Models*).

Each residual block is a temporal block (an RG-LRU recurrent block or a local-attention block, in the
config's repeating pattern) followed by a gated MLP, both pre-normed. The recurrent block, with hooks:

    x_t  = W_x x'_t (hook_x);  u_t = causal depthwise conv(x)_t (hook_conv, the RG-LRU input)
    r_t  = σ(W_a u_t + b_a),  i_t = σ(W_i u_t + b_i)     (block-diagonal per head; hook_r, hook_i)
    a_t  = exp(−c · r_t · softplus(Λ)),  c = 8            (hook_a; a_t = 0 at the start of a text)
    b_t  = sqrt(1 − a_t²) ⊙ (i_t ⊙ u_t)                   (hook_normalized_x; the factor is 1 at the start)
    h_t  = a_t ⊙ h_{t−1} + b_t                            (hook_h, the recurrent state)
    out  = W_out(h_t ⊙ GeLU(W_y x'_t))                    (hook_gate = GeLU branch, hook_out)

The start of a text is absolute position 0, as the library's `position_ids == 0` reset: there a_t
is 0 and the normalisation factor 1. The state carries `position` (tokens already read) so a text
can be continued call after call. Local attention is not a recurrence: both paths compute it the
same way; its state is the last `window − 1` rotated keys and values, as the library's cache.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import (
    AdapterMixer,
    AdapterMlpBlock,
    HookedTransformersLM,
    SoftCappedHead,
)
from workbench.kernels.dispatch import fastest_linear_scan
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import Emit, State, run_recurrence
from workbench.models.specs import RESID, HookSpec, shared_dims

BPL = ("batch", "pos", "d_lru")
RECURRENCE_SCALE = 8.0  # c in a_t = a^{c r_t} (Griffin, section 2.4)
POSITION_SPEC: HookSpec = (("batch",), "tokens already read (absolute position of the next token; 0 = start)")


def positions(state: State, length: int) -> Tensor:
    """Absolute position of every token of this call: [batch, pos] (int64)."""
    start = state["position"].round().long()  # [batch]
    return start[:, None] + torch.arange(length, device=start.device)


class HookedRgLru(AdapterMixer):
    """`transformers` RecurrentGemmaRecurrentBlock recomputed with every RG-LRU quantity hooked."""

    quantities = ("x", "conv", "r", "i", "a", "normalized_x", "h", "gate", "out")
    state_names = ("conv", "h", "position")

    def __init__(self, hf_block: nn.Module, sizes: Mapping[str, int]):
        super().__init__(sizes)
        self.hf = hf_block  # shares linear_x, linear_y, conv_1d, linear_out, rg_lru's gates and Λ

    def hook_specs(self) -> dict[str, HookSpec]:
        specs = shared_dims(BPL, {
            "x": "x_t = W_x x'_t, the recurrent branch before the conv",
            "conv": "u_t = causal depthwise conv(x)_t, the RG-LRU input",
            "r": "recurrence gate r_t = σ(W_a u_t + b_a)",
            "i": "input gate i_t = σ(W_i u_t + b_i)",
            "a": "decay a_t = exp(−8 r_t softplus(Λ)), 0 at absolute position 0",
            "normalized_x": "b_t = sqrt(1 − a_t²) ⊙ i_t ⊙ u_t, the scan input",
            "h": "RG-LRU state h_t = a_t ⊙ h_{t−1} + b_t",
            "gate": "GeLU branch GeLU(W_y x'_t)",
        })
        specs["out"] = (RESID, "block output W_out(h_t ⊙ gate_t)")
        return specs

    def state_specs(self) -> dict[str, HookSpec]:
        return {
            "conv": (("batch", "d_lru", "d_conv-1"), "the last d_conv − 1 conv inputs x"),
            "h": (("batch", "d_lru"), "initial RG-LRU state h_{-1}"),
            "position": POSITION_SPEC,
        }

    def _gate(self, u: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """σ(block-diagonal linear map of u per head): u [batch, pos, d_lru] -> [batch, pos, d_lru]."""
        batch, pos, width = u.shape
        heads = weight.shape[0]
        per_head = u.reshape(batch * pos, heads, width // heads).transpose(0, 1)  # [heads, batch·pos, w]
        pre = torch.baddbmm(bias[:, None, :], per_head, weight)  # [heads, batch·pos, w]
        return torch.sigmoid(pre.transpose(0, 1).reshape(batch, pos, width))

    @staticmethod
    def _step(inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        """h_t = a_t ⊙ h_{t−1} + b_t, every tensor [batch, d_lru]."""
        return {"h": emit("h", inputs["a"] * state["h"] + inputs["normalized_x"])}

    @staticmethod
    def _state_at(values: Mapping[str, Tensor], t: int) -> State:
        return {"h": values["h"][:, t]}

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        """The library ignores the attention mask in recurrent blocks (padding enters the state); so do we."""
        hf, lru = self.hf, self.hf.rg_lru
        batch, pos = x_in.shape[:2]
        x = self.hook_x(hf.linear_x(x_in))  # [batch, pos, d_lru]
        padded = torch.cat([state["conv"], x.transpose(1, 2)], dim=-1)  # [batch, d_lru, k-1+pos]
        conv = F.conv1d(padded, hf.conv_1d.weight, hf.conv_1d.bias, groups=self.sizes["d_lru"])
        u = self.hook_conv(conv.transpose(1, 2))  # [batch, pos, d_lru]
        new_conv = padded[..., padded.shape[-1] - (self.sizes["d_conv"] - 1):]

        r = self.hook_r(self._gate(u, lru.recurrent_gate_weight, lru.recurrent_gate_bias))
        i = self.hook_i(self._gate(u, lru.input_gate_weight, lru.input_gate_bias))
        start = (positions(state, pos) == 0)[..., None]  # [batch, pos, 1]: the reset at position 0
        log_a = -RECURRENCE_SCALE * r * F.softplus(lru.recurrent_param)  # [batch, pos, d_lru]
        a = torch.where(start, torch.zeros_like(log_a), torch.exp(log_a))
        unedited = a.clone()
        a = self.hook_a(a)
        # a² as the library forms it (exp(2 log a), exact to the bit) unless a hook changed a; an edited
        # a_t >= 1 gets the input factor sqrt(max(1 − a_t², 0)) = 0 rather than NaN
        a_square = torch.where(start, torch.zeros_like(log_a), torch.exp(2 * log_a))
        a_square = torch.where(a == unedited, a_square, torch.clamp(a * a, max=1.0))
        normalized_x = self.hook_normalized_x(u * i * torch.sqrt(1 - a_square))  # [batch, pos, d_lru]

        inputs = {"a": a, "normalized_x": normalized_x}

        def scan(wanted: set[str], a: Tensor = a, b: Tensor = normalized_x, h0: Tensor = state["h"],
                 ) -> tuple[dict[str, Tensor], State]:
            self.last_kernel, kernel = fastest_linear_scan(a, b, h0)
            h = kernel(a, b, h0)  # [batch, pos, d_lru]
            return {"h": h}, {"h": h[:, -1]}

        values, final = run_recurrence(
            self._step, inputs, {"h": state["h"]}, self.hook_points(("h",)), self._state_at, ("h",),
            needed=("h",), first_pass=scan if fused else None,
            segment_pass=(lambda wanted, start, stop, before: scan(
                wanted, a[:, start:stop].contiguous(), normalized_x[:, start:stop].contiguous(), before["h"],
            )) if fused else None,
        )
        gate = self.hook_gate(hf.act_fn(hf.linear_y(x_in)))  # [batch, pos, d_lru]
        out = self.hook_out(hf.linear_out(values["h"] * gate))  # [batch, pos, d_model]
        return out, {"conv": new_conv, "h": final["h"], "position": state["position"] + pos}


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE on the first `rot` dims of each head (the rest pass): x [batch, pos, heads, d_head],
    cos/sin [batch, pos, rot] (Su et al. 2021, halves rotated as in the library)."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    first, second = x_rot[..., : rot // 2], x_rot[..., rot // 2:]
    turned = torch.cat([-second, first], dim=-1)
    return torch.cat([x_rot * cos[:, :, None] + turned * sin[:, :, None], x_pass], dim=-1)


class HookedLocalAttention(AdapterMixer):
    """`transformers` RecurrentGemmaAttention (sliding-window MQA/GQA with partial RoPE), hooked.

    The pattern is kept in window layout: `pattern[b, t, h, s]` is the weight of query t on the key
    at position t − (window − 1) + s, so it costs pos × window, never pos².
    """

    quantities = ("q", "k", "v", "pattern", "z", "out")
    state_names = ("k", "v", "position")

    def __init__(self, hf_attention: nn.Module, sizes: Mapping[str, int]):
        super().__init__(sizes)
        self.hf = hf_attention  # shares q_proj, k_proj, v_proj, o_proj and the rotary frequencies

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "q": (("batch", "pos", "n_heads", "d_head"), "queries, before RoPE"),
            "k": (("batch", "pos", "n_kv_heads", "d_head"), "keys, before RoPE"),
            "v": (("batch", "pos", "n_kv_heads", "d_head"), "values"),
            "pattern": (("batch", "pos", "n_heads", "window"),
                        "attention weights over the window: slot s is the key at t − (window − 1) + s"),
            "z": (("batch", "pos", "n_heads", "d_head"), "pattern-weighted values per head"),
            "out": (RESID, "block output W_o z_t"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {
            "k": (("batch", "n_kv_heads", "window-1", "d_head"), "the last window − 1 rotated keys"),
            "v": (("batch", "n_kv_heads", "window-1", "d_head"), "the last window − 1 values"),
            "position": POSITION_SPEC,
        }

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf, sz = self.hf, self.sizes
        batch, pos = x_in.shape[:2]
        window, d_head = sz["window"], sz["d_head"]
        self.last_kernel = "windowed attention (no recurrence)"
        q = self.hook_q(hf.q_proj(x_in).view(batch, pos, -1, d_head))  # [batch, pos, n_heads, d_head]
        k = self.hook_k(hf.k_proj(x_in).view(batch, pos, -1, d_head))  # [batch, pos, n_kv_heads, d_head]
        v = self.hook_v(hf.v_proj(x_in).view(batch, pos, -1, d_head))
        absolute = positions(state, pos)  # [batch, pos]
        cos, sin = hf.rotary_emb(v, absolute)  # [batch, pos, rot]
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        keys = torch.cat([state["k"], k.transpose(1, 2)], dim=2)  # [batch, n_kv, window-1+pos, d_head]
        values = torch.cat([state["v"], v.transpose(1, 2)], dim=2)
        repeat = sz["n_heads"] // sz["n_kv_heads"]
        scores = q.transpose(1, 2) @ keys.repeat_interleave(repeat, dim=1).transpose(2, 3) * hf.scaling
        # scores [batch, n_heads, pos, window-1+pos]; slot s of query t is key index t + s
        index = torch.arange(pos, device=q.device)[:, None] + torch.arange(window, device=q.device)  # [pos, w]
        scores = scores.gather(-1, index.expand(batch, sz["n_heads"], pos, window))
        valid = self._valid_keys(absolute, index, mask)  # [batch, pos, window]
        scores = scores.masked_fill(~valid[:, None], float("-inf"))
        pattern = torch.softmax(scores, dim=-1)
        # a query with no visible key attends to nothing (zero output), as the library's SDPA path
        pattern = torch.where(valid.any(-1)[:, None, :, None], pattern, torch.zeros_like(pattern))
        pattern = self.hook_pattern(pattern.transpose(1, 2))  # [batch, pos, n_heads, window]
        full = scores.new_zeros(batch, sz["n_heads"], pos, keys.shape[2])
        full = full.scatter(-1, index.expand(batch, sz["n_heads"], pos, window), pattern.transpose(1, 2))
        z = full @ values.repeat_interleave(repeat, dim=1)  # [batch, n_heads, pos, d_head]
        z = self.hook_z(z.transpose(1, 2))  # [batch, pos, n_heads, d_head]
        out = self.hook_out(hf.o_proj(z.reshape(batch, pos, -1)))  # [batch, pos, d_model]
        keep = window - 1
        new_state = {"k": keys[:, :, keys.shape[2] - keep:], "v": values[:, :, values.shape[2] - keep:],
                     "position": state["position"] + pos}
        return out, new_state

    def _valid_keys(self, absolute: Tensor, index: Tensor, mask: Tensor | None) -> Tensor:
        """[batch, pos, window]: the key in slot s of query t is a real token (position >= 0, not padding)."""
        window = self.sizes["window"]
        offset = index - (window - 1)  # [pos, window]: key position relative to this call's first token
        valid = (absolute[:, :1, None] + offset) >= 0  # [batch, pos, window]
        if mask is not None:
            padded = torch.cat([mask.new_ones(mask.shape[0], window - 1), mask], dim=1)  # cached keys count
            valid = valid & padded[:, index].bool()
        return valid


class HookedGatedMlp(nn.Module):
    """`transformers` RecurrentGemmaMlp: W_down(GeLU(W_gate x) ⊙ W_up x), hidden quantities hooked."""

    def __init__(self, hf_mlp: nn.Module):
        super().__init__()
        self.hf = hf_mlp
        self.hook_pre = ScopedHookPoint()
        self.hook_post = ScopedHookPoint()

    def forward(self, x: Tensor) -> Tensor:
        hf = self.hf
        gate = self.hook_pre(hf.act_fn(hf.gate_proj(x)))  # [batch, pos, d_mlp]
        return hf.down_proj(self.hook_post(gate * hf.up_proj(x)))  # [batch, pos, d_model]


class HookedGriffinBlock(AdapterMlpBlock):
    """resid_mid = resid_pre + temporal(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid))."""

    def __init__(self, hf_layer: nn.Module, mixer: AdapterMixer):
        super().__init__(hf_layer.temporal_pre_norm, mixer, hf_layer.channel_pre_norm,
                         HookedGatedMlp(hf_layer.mlp_block))

    def extra_hook_specs(self) -> dict[str, HookSpec]:
        return {
            "hook_resid_mid": (RESID, "residual after the temporal block"),
            "ln2.hook_normalized": (RESID, "normalised input to the MLP"),
            "mlp.hook_pre": (("batch", "pos", "d_mlp"), "MLP gate GeLU(W_gate x)"),
            "mlp.hook_post": (("batch", "pos", "d_mlp"), "MLP hidden GeLU(W_gate x) ⊙ W_up x"),
            "hook_mlp_out": (RESID, "MLP output added to the residual"),
        }


def temporal_mixer(temporal_block: nn.Module, kind: str, sizes: Mapping[str, int]) -> AdapterMixer:
    """The hooked mixer for one of the library's temporal blocks: RG-LRU or local attention."""
    if kind == "linear_attention":
        return HookedRgLru(temporal_block, sizes)
    if kind == "sliding_attention":
        return HookedLocalAttention(temporal_block, sizes)
    raise ValueError(f"unknown RecurrentGemma block type {kind!r}")


class HookedRecurrentGemma(HookedTransformersLM):
    """RecurrentGemmaForCausalLM (Griffin) under the hook contract (De et al. 2024)."""

    family = "recurrent_gemma"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        sizes = {
            "d_model": cfg.hidden_size, "d_lru": cfg.lru_width, "d_inner": cfg.lru_width,
            "n_heads": cfg.num_attention_heads, "n_kv_heads": cfg.num_key_value_heads, "d_head": cfg.head_dim,
            "window": cfg.attention_window_size, "window-1": cfg.attention_window_size - 1,
            "d_conv": cfg.conv1d_width, "d_conv-1": cfg.conv1d_width - 1,
            "d_mlp": cfg.intermediate_size // 2, "d_vocab": cfg.vocab_size,
        }
        block_types = list(cfg.layers_block_type)  # "linear_attention" (RG-LRU) or "sliding_attention"
        blocks = [HookedGriffinBlock(layer, temporal_mixer(layer.temporal_block, kind, sizes))
                  for layer, kind in zip(backbone.layers, block_types, strict=True)]
        super().__init__(hf_model, sizes, blocks, ln_final=backbone.final_norm, embed=backbone.embed_tokens,
                         unembed=SoftCappedHead(hf_model.lm_head, cfg.logits_soft_cap), path=path)
        self.block_types = block_types
        self.setup()

    @property
    def recurrent_layers(self) -> list[int]:
        """Indices of the RG-LRU blocks (the others are local attention)."""
        return [layer for layer, kind in enumerate(self.block_types) if kind == "linear_attention"]

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """The embedding times sqrt(d_model) rounded as the library's bfloat16 normaliser."""
        embedded = self.embed(tokens)  # [batch, pos, d_model]
        return embedded * self.hf_model.model.normalizer.type(embedded.dtype)
