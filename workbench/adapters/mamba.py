"""Mamba and FalconMamba from `transformers` (Gu & Dao 2023, Algorithm 2; Zuo et al. 2024, FalconMamba).

The block recomputed with hooks: in-projection to (x, z); causal depthwise conv on x, activation
-> u; Δ, B, C from u (FalconMamba first RMS-normalises the Δ input, B and C without weights);
selective scan s_t = exp(Δ_t A) ⊙ s_{t−1} + Δ_t B_t u_t, y_t = C_t s_t + D u_t; out_proj(y ⊙ SiLU(z)).
Padding is zeroed before the in-projection and after the conv, as `transformers` does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import (
    AdapterBlock,
    AdapterMixer,
    HookedTransformersLM,
    mask_positions,
)
from workbench.adapters.tl_names import MAMBA_ALIASES, layer_aliases
from workbench.kernels.dispatch import fastest_selective_scan
from workbench.models.mixers.s6 import S6_HOOK_SPECS, S6_STATE_SPECS
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import Emit, State, run_recurrence
from workbench.models.specs import HookSpec


class HookedMambaMixer(AdapterMixer):
    """`transformers` MambaMixer / FalconMambaMixer recomputed with every S6 quantity hooked."""

    quantities = ("x", "conv", "delta", "B", "C", "state", "y", "gate", "out")
    state_names = ("conv", "state")

    def __init__(self, hf_mixer: nn.Module, sizes: Mapping[str, int], falcon: bool = False):
        super().__init__(sizes)
        self.hf = hf_mixer  # shares in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj
        self.falcon = falcon

    def hook_specs(self) -> dict[str, HookSpec]:
        specs = dict(S6_HOOK_SPECS)
        specs["conv"] = (specs["conv"][0], "u_t = act(causal depthwise conv(x)_t), the scan's input")
        return specs

    def state_specs(self) -> dict[str, HookSpec]:
        return dict(S6_STATE_SPECS)

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.hf.A_log)  # [d_inner, d_state]

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        delta, u = inputs["delta"], inputs["conv"]  # [batch, d_inner]
        B, C = inputs["B"], inputs["C"]  # [batch, d_state]
        decay = torch.exp(delta[..., None] * self.A)  # [batch, d_inner, d_state]
        s = emit("state", decay * state["state"] + (delta * u)[..., None] * B[:, None, :])
        emit("y", (s * C[:, None, :]).sum(-1) + self.hf.D * u)
        return {"state": s}

    @staticmethod
    def _state_at(values: Mapping[str, Tensor], t: int) -> State:
        return {"state": values["state"][:, t]}

    def normalize_dt_B_C(self, dt: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The Δ input, B and C as the scan reads them: FalconMamba's weightless RMS norms, else as given."""
        if self.falcon:
            return self.hf.dt_layernorm(dt), self.hf.b_layernorm(B), self.hf.c_layernorm(C)
        return dt, B, C

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf = self.hf
        d_inner, n, rank = self.sizes["d_inner"], self.sizes["d_state"], self.sizes["dt_rank"]
        x_in = mask_positions(x_in, mask)
        # Matmuls over weight slices (not views of one output), so hooks may edit in place.
        w_x, w_z = hf.in_proj.weight.split(d_inner, dim=0)
        b_x, b_z = (None, None) if hf.in_proj.bias is None else hf.in_proj.bias.split(d_inner)
        x = self.hook_x(F.linear(x_in, w_x, b_x))  # [batch, pos, d_inner]
        z = F.linear(x_in, w_z, b_z)  # [batch, pos, d_inner]
        padded = torch.cat([state["conv"], x.transpose(1, 2)], dim=-1)  # [batch, d_inner, k-1+pos]
        conv = F.conv1d(padded, hf.conv1d.weight, hf.conv1d.bias, groups=d_inner)  # [batch, d_inner, pos]
        u = self.hook_conv(mask_positions(hf.act(conv).transpose(1, 2), mask))  # [batch, pos, d_inner]
        new_conv = padded[..., padded.shape[-1] - (self.sizes["d_conv"] - 1):]
        w_dt, w_B, w_C = hf.x_proj.weight.split([rank, n, n], dim=0)
        dt, B, C = self.normalize_dt_B_C(F.linear(u, w_dt), F.linear(u, w_B), F.linear(u, w_C))  # [batch, pos, ·]
        delta = self.hook_delta(F.softplus(F.linear(dt, hf.dt_proj.weight, hf.dt_proj.bias)))
        inputs = {"conv": u, "delta": delta, "B": self.hook_B(B), "C": self.hook_C(C)}

        def scan(wanted: set[str], start: int = 0, stop: int | None = None, before: State = state,
                 ) -> tuple[dict[str, Tensor], State]:
            window = [inputs[name][:, start:stop].contiguous() for name in ("conv", "delta", "B", "C")]
            scan_inputs = (*window[:2], self.A, *window[2:], hf.D, before["state"].contiguous())
            self.last_kernel, kernel = fastest_selective_scan(*scan_inputs)  # Triton / compiled C++ / chunked
            y, states = kernel(*scan_inputs, return_states="state" in wanted)
            if "state" in wanted:
                return {"y": y, "state": states}, {"state": states[:, -1]}
            return {"y": y}, {"state": states}

        values, final = run_recurrence(
            self._step, inputs, {"state": state["state"]}, self.hook_points(("state", "y")),
            self._state_at, ("state",), needed=("y",), first_pass=scan if fused else None,
            segment_pass=scan if fused else None,
        )
        gate = self.hook_gate(F.silu(z))  # [batch, pos, d_inner]
        out = self.hook_out(hf.out_proj(values["y"] * gate))  # [batch, pos, d_model]
        return out, {"conv": new_conv, "state": final["state"]}


class HookedMamba(HookedTransformersLM):
    """MambaForCausalLM / FalconMambaForCausalLM under the hook contract (Gu & Dao 2023)."""

    family = "mamba"
    generate_with_padding = True  # padded inputs are zeroed before the conv and the scan: the state stays zero

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.backbone
        falcon = type(hf_model).__name__.startswith("FalconMamba")
        sizes = {
            "d_model": cfg.hidden_size, "d_inner": cfg.intermediate_size, "d_state": cfg.state_size,
            "d_conv": cfg.conv_kernel, "d_conv-1": cfg.conv_kernel - 1, "dt_rank": int(cfg.time_step_rank),
            "d_vocab": cfg.vocab_size,
        }
        blocks = [AdapterBlock(layer.norm, HookedMambaMixer(layer.mixer, sizes, falcon)) for layer in backbone.layers]
        super().__init__(hf_model, sizes, blocks, ln_final=backbone.norm_f, embed=backbone.embeddings,
                         unembed=hf_model.lm_head, path=path, family="falcon_mamba" if falcon else "mamba")
        self.setup()
        # TransformerLens 4.x's SSM bridge names (workbench.adapters.tl_names)
        self.hook_aliases = layer_aliases(MAMBA_ALIASES, len(self.blocks), set(self.hook_dict))
