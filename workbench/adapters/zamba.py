"""Zamba from `transformers` (Glorioso et al. 2024): a Mamba-1 backbone with one shared attention block.

Mamba layers split d_inner into `n_mamba_heads` heads, each with its own x_proj (Δ input, B, C) and
dt_proj, so B_t and C_t are per head: s_t = exp(Δ_t A) ⊙ s_{t−1} + Δ_t B_t^{(h)} u_t,
y_t = C_t^{(h)} s_t + D u_t for every channel of head h (hooks `B`, `C` `[b,p,n_mamba_heads,d_state]`).
A hybrid layer first runs the shared transformer block on [resid, embedding] (no residual inside it):
t = W_lin MLP(norm(attention(norm([h; e])))), then h + mamba(norm(h + t)). The attention weights are
shared between hybrid layers; each keeps its own KV cache, which is part of that layer's state.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import AdapterBlock, AdapterMixer, HookedHybridLM, HookedNorm, mask_positions
from workbench.adapters.kv_attention import HookedKvAttention
from workbench.adapters.rms_norm import FullPrecisionRMSNorm
from workbench.kernels.cpu_compiled import compiled_selective_scan
from workbench.kernels.dispatch import fastest_selective_scan
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.mixers.s6 import S6_HOOK_SPECS, S6_STATE_SPECS
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import Emit, State, run_recurrence
from workbench.models.specs import RESID, HookSpec

__all__ = ["HookedZamba", "HookedZambaMambaMixer", "SharedTransformerBlock", "ZambaHybridBlock"]

BP_HEADS_STATE = ("batch", "pos", "n_mamba_heads", "d_state")


class HookedZambaMambaMixer(AdapterMixer):
    """`transformers` ZambaMambaMixer recomputed with every S6 quantity hooked, B and C per Mamba head."""

    quantities = ("x", "conv", "delta", "B", "C", "state", "y", "gate", "out")
    state_names = ("conv", "state")

    def __init__(self, hf_mixer: nn.Module, sizes: Mapping[str, int]):
        super().__init__(sizes)
        self.hf = hf_mixer  # shares in_proj, conv1d, x_proj_weight, dt_proj_weight/bias, A_log, D, out_proj

    def hook_specs(self) -> dict[str, HookSpec]:
        specs = dict(S6_HOOK_SPECS)
        specs["conv"] = (specs["conv"][0], "u_t = act(causal depthwise conv(x)_t), the scan's input")
        specs["B"] = (BP_HEADS_STATE, "input matrix B_t per Mamba head (that head's x_proj)")
        specs["C"] = (BP_HEADS_STATE, "output matrix C_t per Mamba head")
        return specs

    def state_specs(self) -> dict[str, HookSpec]:
        return dict(S6_STATE_SPECS)

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.hf.A_log).flatten(0, 1)  # [d_inner, d_state]

    @property
    def D(self) -> Tensor:
        return self.hf.D.flatten()  # [d_inner]

    def per_channel(self, x: Tensor) -> Tensor:
        """[..., n_mamba_heads, d_state] -> [..., d_inner, d_state]: each head's B or C for its channels."""
        return x.repeat_interleave(self.sizes["d_inner"] // self.sizes["n_mamba_heads"], dim=-2)

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        delta, u = inputs["delta"], inputs["conv"]  # [batch, d_inner]
        B, C = self.per_channel(inputs["B"]), self.per_channel(inputs["C"])  # [batch, d_inner, d_state]
        s = emit("state", torch.exp(delta[..., None] * self.A) * state["state"] + (delta * u)[..., None] * B)
        emit("y", (s * C).sum(-1) + self.D * u)
        return {"state": s}

    @staticmethod
    def _state_at(values: Mapping[str, Tensor], t: int) -> State:
        return {"state": values["state"][:, t]}

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf, sz = self.hf, self.sizes
        heads, rank, n = sz["n_mamba_heads"], sz["dt_rank"], sz["d_state"]
        batch, pos = x_in.shape[:2]
        x_in = mask_positions(x_in, mask)
        # the library interleaves x and the gate in in_proj's output rows: x = rows 0, 2, ...; z = rows 1, 3, ...
        b_x, b_z = (None, None) if hf.in_proj.bias is None else (hf.in_proj.bias[0::2], hf.in_proj.bias[1::2])
        x = self.hook_x(F.linear(x_in, hf.in_proj.weight[0::2], b_x))  # [batch, pos, d_inner]
        z = F.linear(x_in, hf.in_proj.weight[1::2], b_z)  # [batch, pos, d_inner]
        padded = torch.cat([state["conv"], x.transpose(1, 2)], dim=-1)  # [batch, d_inner, k-1+pos]
        conv = F.conv1d(padded, hf.conv1d.weight, hf.conv1d.bias, groups=sz["d_inner"])  # [batch, d_inner, pos]
        u = self.hook_conv(mask_positions(hf.act(conv).transpose(1, 2), mask))  # [batch, pos, d_inner]
        new_conv = padded[..., padded.shape[-1] - (sz["d_conv"] - 1):]
        u_heads = u.view(batch, pos, heads, -1)  # [batch, pos, H, head_dim]
        params = torch.einsum("hrd,bphd->bphr", hf.x_proj_weight, u_heads)  # [batch, pos, H, rank + 2n]
        dt, B, C = params.split([rank, n, n], dim=-1)
        dt = torch.einsum("hdr,bphr->bphd", hf.dt_proj_weight, dt) + hf.dt_proj_bias  # [batch, pos, H, head_dim]
        delta = self.hook_delta(F.softplus(dt).flatten(2))  # [batch, pos, d_inner]
        inputs = {"conv": u, "delta": delta, "B": self.hook_B(B), "C": self.hook_C(C)}

        def scan(wanted: set[str], start: int = 0, stop: int | None = None, before: State = state,
                 ) -> tuple[dict[str, Tensor], State]:
            """The fused selective scan: the compiled C++ scan takes B and C per Mamba head in one call (its
            groups), writing one state buffer; the other kernels run once per head."""
            conv_u, steps = inputs["conv"][:, start:stop], inputs["delta"][:, start:stop]  # [batch, pos, d_inner]
            head_B, head_C = inputs["B"][:, start:stop], inputs["C"][:, start:stop]  # [batch, pos, H, d_state]
            self.last_kernel, kernel = fastest_selective_scan(conv_u, steps, self.A, head_B[:, :, 0], head_C[:, :, 0],
                                                              self.D, before["state"])
            if kernel is compiled_selective_scan:
                y, s = kernel(conv_u, steps, self.A, head_B, head_C, self.D, before["state"],
                              return_states="state" in wanted)
                return ({"y": y, "state": s}, {"state": s[:, -1]}) if "state" in wanted else ({"y": y}, {"state": s})
            width = sz["d_inner"] // heads
            ys, states = [], []
            for h in range(heads):
                channels = slice(h * width, (h + 1) * width)
                scan_inputs = (inputs["conv"][:, start:stop, channels].contiguous(),
                               inputs["delta"][:, start:stop, channels].contiguous(), self.A[channels],
                               inputs["B"][:, start:stop, h].contiguous(), inputs["C"][:, start:stop, h].contiguous(),
                               self.D[channels], before["state"][:, channels].contiguous())
                self.last_kernel, kernel = fastest_selective_scan(*scan_inputs)
                y, s = kernel(*scan_inputs, return_states="state" in wanted)
                ys.append(y)
                states.append(s)
            y = torch.cat(ys, dim=-1)  # [batch, pos, d_inner]
            if "state" in wanted:
                s = torch.cat(states, dim=2)  # [batch, pos, d_inner, d_state]
                return {"y": y, "state": s}, {"state": s[:, -1]}
            return {"y": y}, {"state": torch.cat(states, dim=1)}

        values, final = run_recurrence(
            self._step, inputs, {"state": state["state"]}, self.hook_points(("state", "y")),
            self._state_at, ("state",), needed=("y",), first_pass=scan if fused else None,
            segment_pass=scan if fused else None,
        )
        gate = self.hook_gate(F.silu(z))  # [batch, pos, d_inner]
        out = self.hook_out(hf.out_proj(values["y"] * gate))  # [batch, pos, d_model]
        return out, {"conv": new_conv, "state": final["state"]}


class SharedTransformerBlock(AdapterBlock):
    """Zamba's and Zamba2's hybrid layer: the shared transformer block on [resid; embedding], its output
    (through the layer's linear) added to the Mamba input: resid_post = resid_pre + mixer(ln1(resid_pre +
    transformer_out)). The state holds the mixer's and this layer's own KV cache side by side.

    Subclasses build `attn_ln`, the attention (attribute and hook prefix `attention_name`), `mlp_ln`, `mlp`
    and `linear` from the library's layer, and say how the shared MLP is called (`shared_mlp`).
    """

    attention_name = "attn"
    mixer_label = "Mamba"
    mlp_label = "shared MLP output"

    def __init__(self, ln1: nn.Module, mixer: AdapterMixer):
        super().__init__(ln1, mixer)
        self.hook_attn_in = ScopedHookPoint()
        self.hook_attn_out = ScopedHookPoint()
        self.hook_mlp_out = ScopedHookPoint()
        self.hook_transformer_out = ScopedHookPoint()

    @property
    def attention(self) -> AdapterMixer:
        return getattr(self, self.attention_name)

    def shared_mlp(self, x: Tensor) -> Tensor:
        return self.mlp(x)

    def hook_specs(self, layer: int) -> dict[str, HookSpec]:
        attention = {name.replace("mixer.", f"{self.attention_name}.", 1): spec
                     for name, spec in self.attention.block_hook_specs().items() if name.startswith("mixer.")}
        return {
            "hook_resid_pre": (RESID, f"residual stream entering block {layer}"),
            "hook_attn_in": (("batch", "pos", "d_attn_in"), "[resid_pre; token embedding], the shared block's input"),
            "attn_ln.hook_normalized": (("batch", "pos", "d_attn_in"), "normalised input to the shared attention"),
            **attention,
            "hook_attn_out": (RESID, "shared attention output (no residual around it)"),
            "mlp_ln.hook_normalized": (RESID, "normalised input to the shared MLP"),
            "hook_mlp_out": (RESID, self.mlp_label),
            "hook_transformer_out": (RESID, f"the layer's linear of the MLP output, added to the {self.mixer_label} "
                                            "input"),
            "ln1.hook_normalized": (RESID, "normalised input to the mixer, ln1(resid_pre + transformer_out)"),
            **self.mixer.block_hook_specs(),
            "hook_mixer_out": (RESID, "mixer output added to the residual"),
            "hook_resid_post": (RESID, f"residual stream leaving block {layer}"),
        }

    def zero_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        """The mixer's state and this layer's KV cache of the shared attention."""
        return {**self.mixer.zero_state(batch, device, dtype), **self.attention.zero_state(batch, device, dtype)}

    def forward(self, resid: Tensor, state: Mapping[str, Tensor] | None, path: ExecutionPath,
                mask: Tensor | None = None, embedding: Tensor | None = None) -> tuple[Tensor, State]:
        resid = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        kv = None if state is None else {name: state[name] for name in self.attention.state_names}
        recurrent = None if state is None else {name: state[name] for name in self.mixer.state_names}
        attn_in = self.hook_attn_in(torch.cat([resid, embedding], dim=-1))  # [batch, pos, 2 d_model]
        attended, kv_state = self.attention(self.attn_ln(attn_in), kv, path, mask)
        attended = self.hook_attn_out(attended)
        mlp_out = self.hook_mlp_out(self.shared_mlp(self.mlp_ln(attended)))
        transformer_out = self.hook_transformer_out(self.linear(mlp_out))
        mixed, new_state = self.mixer(self.ln1(resid + transformer_out), recurrent, path, mask)
        return self.hook_resid_post(resid + self.hook_mixer_out(mixed)), {**new_state, **kv_state}


class ZambaHybridBlock(SharedTransformerBlock):
    """Zamba's hybrid layer: one shared attention block (no RoPE) before a multi-head Mamba layer."""

    def __init__(self, hf_layer: nn.Module, mixer: AdapterMixer, sizes: Mapping[str, int]):
        super().__init__(FullPrecisionRMSNorm(hf_layer.mamba_decoder.input_layernorm), mixer)
        shared = hf_layer.shared_transf
        self.attn_ln = HookedNorm(FullPrecisionRMSNorm(shared.input_layernorm))
        self.attn = HookedKvAttention(shared.self_attn, sizes, out_proj=shared.self_attn.o_proj)
        self.mlp_ln = HookedNorm(FullPrecisionRMSNorm(shared.pre_ff_layernorm))
        self.mlp = shared.feed_forward
        self.linear = hf_layer.linear


class HookedZamba(HookedHybridLM):
    """ZambaForCausalLM under the hook contract: multi-head Mamba-1 layers and a shared attention block."""

    family = "zamba"

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.model
        d_inner = cfg.mamba_expand * cfg.hidden_size
        kinds = list(cfg.layers_block_type)  # "linear_attention" (Mamba only) or "hybrid" per layer
        attention = next((layer.shared_transf.self_attn for layer, kind in zip(backbone.layers, kinds, strict=True)
                          if kind == "hybrid"), None)
        sizes = {
            "d_model": cfg.hidden_size, "d_vocab": cfg.vocab_size, "d_inner": d_inner,
            "d_state": cfg.mamba_d_state, "d_conv": cfg.mamba_d_conv, "d_conv-1": cfg.mamba_d_conv - 1,
            "dt_rank": int(cfg.mamba_dt_rank), "n_mamba_heads": cfg.n_mamba_heads,
            "d_attn_in": cfg.attention_hidden_size,
            "n_heads": cfg.num_attention_heads, "n_kv_heads": cfg.num_key_value_heads,
            "d_head": attention.head_dim if attention is not None else cfg.hidden_size // cfg.num_attention_heads,
        }
        blocks = [self._block(layer, kind, sizes) for layer, kind in zip(backbone.layers, kinds, strict=True)]
        super().__init__(hf_model, sizes, blocks, ln_final=FullPrecisionRMSNorm(backbone.final_layernorm),
                         embed=backbone.embed_tokens, unembed=hf_model.lm_head, path=path)
        self.layer_types = ["hybrid" if kind == "hybrid" else "mamba" for kind in kinds]
        self.setup()

    @staticmethod
    def _block(layer: nn.Module, kind: str, sizes: Mapping[str, int]) -> AdapterBlock:
        if kind == "hybrid":
            return ZambaHybridBlock(layer, HookedZambaMambaMixer(layer.mamba_decoder.mamba, sizes), sizes)
        if kind == "linear_attention":
            return AdapterBlock(FullPrecisionRMSNorm(layer.input_layernorm), HookedZambaMambaMixer(layer.mamba, sizes))
        raise ValueError(f"unknown Zamba layer type {kind!r}; expected 'linear_attention' or 'hybrid'")

    @property
    def recurrent_layers(self) -> list[int]:
        """Every layer has a Mamba mixer (hybrid layers add the shared attention before it)."""
        return list(range(len(self.blocks)))

    def block_inputs(self, block: nn.Module, embedding: Tensor) -> dict[str, Tensor]:
        """Hybrid blocks read the embedding (after `hook_embed`) beside the residual stream."""
        return {"embedding": embedding} if isinstance(block, ZambaHybridBlock) else {}
