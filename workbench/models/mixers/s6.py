"""The Mamba block around the S6 selective scan (Gu & Dao 2023, Algorithm 2 and Figure 3).

in-projection to (x, z); causal depthwise conv on x, SiLU -> u; input-dependent Δ, B, C from u;
selective scan s_t = exp(Δ_t A) ⊙ s_{t−1} + Δ_t B_t u_t, y_t = C_t s_t + D u_t; output
out_proj(y ⊙ SiLU(z)). Everything but the scan is parallel over positions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.kernels.buffers import buffered_linear, recording_buffer
from workbench.kernels.cpu_compiled import compiled_causal_conv_silu, use_compiled_scan
from workbench.kernels.dispatch import fastest_selective_scan
from workbench.kernels.selective_scan_grad import selective_scan_trainable
from workbench.models.config import RecurrentConfig
from workbench.models.mixers.base import Mixer
from workbench.models.recurrence import Emit, State, run_recurrence
from workbench.models.specs import BP_INNER, BP_STATE, RESID, HookSpec

# The Mamba block's hooks (shared with the Hugging Face Mamba adapter).
S6_HOOK_SPECS: dict[str, HookSpec] = {
    "x": (BP_INNER, "in-projected input x_t (before the conv)"),
    "conv": (BP_INNER, "u_t = SiLU(causal depthwise conv(x)_t), the scan's input"),
    "delta": (BP_INNER, "step size Δ_t = softplus(W_Δ u_t + b_Δ)"),
    "B": (BP_STATE, "input matrix B_t = W_B u_t"),
    "C": (BP_STATE, "output matrix C_t = W_C u_t"),
    "state": (("batch", "pos", "d_inner", "d_state"),
              "SSM state s_t = exp(Δ_t A) ⊙ s_{t−1} + Δ_t B_t u_t"),
    "y": (BP_INNER, "scan output y_t = C_t · s_t + D ⊙ u_t"),
    "gate": (BP_INNER, "gate SiLU(z_t)"),
    "out": (RESID, "block output out_proj(y_t ⊙ gate_t)"),
}
S6_STATE_SPECS: dict[str, HookSpec] = {
    "conv": (("batch", "d_inner", "d_conv-1"), "the last d_conv − 1 conv inputs x"),
    "state": (("batch", "d_inner", "d_state"), "initial SSM state s_{-1}"),
}


class S6Mixer(Mixer):
    """Mamba block with an S6 selective scan; `d_hidden` plays the role of Mamba's d_inner."""

    quantities = ("x", "conv", "delta", "B", "C", "state", "y", "gate", "out")
    state_names = ("conv", "state")

    def __init__(self, cfg: RecurrentConfig):
        super().__init__(cfg)
        d_inner, n = cfg.d_hidden, cfg.d_state
        self.in_proj = nn.Linear(cfg.d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, cfg.d_conv, groups=d_inner, bias=True)
        self.x_proj = nn.Linear(d_inner, cfg.dt_rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(cfg.dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1).float()).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, cfg.d_model, bias=False)
        self._init_dt_bias()

    def _init_dt_bias(self, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        """Δ starts log-uniform in [dt_min, dt_max], as in Mamba, via softplus⁻¹ of the bias."""
        with torch.no_grad():
            u = torch.rand(self.cfg.d_hidden)
            dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def hook_specs(self) -> dict[str, HookSpec]:
        return dict(S6_HOOK_SPECS)

    def state_specs(self) -> dict[str, HookSpec]:
        return dict(S6_STATE_SPECS)

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.A_log)  # [d_inner, d_state]

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        delta, u = inputs["delta"], inputs["conv"]  # [batch, d_inner]
        B, C = inputs["B"], inputs["C"]  # [batch, d_state]
        decay = torch.exp(delta[..., None] * self.A)  # [batch, d_inner, d_state]
        s = emit("state", decay * state["state"] + (delta * u)[..., None] * B[:, None, :])
        emit("y", (s * C[:, None, :]).sum(-1) + self.D * u)
        return {"state": s}

    @staticmethod
    def _state_at(values: Mapping[str, Tensor], t: int) -> State:
        return {"state": values["state"][:, t]}

    def _parallel_inputs(
        self, x_in: Tensor, conv_state: Tensor, fused: bool = False
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Everything before the scan: (scan inputs, z, new conv state). fused: the conv + SiLU may
        run as one compiled pass (CPU, no gradient needed)."""
        d_inner, n, rank = self.cfg.d_hidden, self.cfg.d_state, self.cfg.dt_rank
        compiled = fused and use_compiled_scan(x_in, conv_state, self.conv1d.weight)
        # CPU without gradients: the large activations go into pooled recording buffers, which a
        # repeated recording reuses instead of page-faulting fresh memory (workbench/kernels/buffers.py)
        linear = buffered_linear if compiled else F.linear
        # Separate matmuls over weight slices, not a split of one output: hooked tensors must not
        # be views, so that hooks may edit them in place.
        w_x, w_z = self.in_proj.weight.split(d_inner, dim=0)
        x = self.hook_x(linear(x_in, w_x))  # [batch, pos, d_inner]
        z = linear(x_in, w_z)  # [batch, pos, d_inner]
        if compiled:
            u, new_conv_state = compiled_causal_conv_silu(x, conv_state, self.conv1d.weight, self.conv1d.bias)
        else:
            padded = torch.cat([conv_state, x.transpose(1, 2)], dim=-1)  # [batch, d_inner, k-1+pos]
            # contiguous once here rather than copied by each of the three projections below
            u = F.silu(self.conv1d(padded).transpose(1, 2).contiguous())  # [batch, pos, d_inner]
            new_conv_state = padded[..., padded.shape[-1] - (self.cfg.d_conv - 1):]
        u = self.hook_conv(u)
        w_dt, w_B, w_C = self.x_proj.weight.split([rank, n, n], dim=0)
        dt, B, C = F.linear(u, w_dt), F.linear(u, w_B), F.linear(u, w_C)  # [batch, pos, ·]
        if compiled:  # softplus in place, in the pooled buffer
            delta = buffered_linear(dt, self.dt_proj.weight, self.dt_proj.bias)  # [batch, pos, d_inner]
            delta = torch.ops.aten.softplus.out(delta, 1, 20, out=delta)
        else:
            delta = F.softplus(self.dt_proj(dt))
        delta = self.hook_delta(delta)
        inputs = {"conv": u, "delta": delta, "B": self.hook_B(B), "C": self.hook_C(C)}
        return inputs, z, new_conv_state

    def _run(self, x_in: Tensor, state: State, fused: bool) -> tuple[Tensor, State]:
        inputs, z, new_conv_state = self._parallel_inputs(x_in, state["conv"], fused)
        compiled = fused and use_compiled_scan(x_in, state["conv"], self.conv1d.weight)

        def segment(wanted: set[str], start: int, stop: int, before: State) -> tuple[dict[str, Tensor], State]:
            window = {name: inputs[name][:, start:stop].contiguous() for name in ("conv", "delta", "B", "C")}
            return scan(wanted, window, before["state"].contiguous())

        def scan(
            wanted: set[str], inputs: Mapping[str, Tensor] = inputs, state0: Tensor | None = None
        ) -> tuple[dict[str, Tensor], State]:
            state0 = state["state"] if state0 is None else state0
            if "state" not in wanted and torch.is_grad_enabled() and self.A_log.requires_grad:
                self.last_kernel = "selective scan with adjoint-scan backward"
                y, last = selective_scan_trainable(
                    inputs["conv"], inputs["delta"], self.A, inputs["B"], inputs["C"], self.D, state0,
                )
                return {"y": y}, {"state": last}
            scan_inputs = (inputs["conv"], inputs["delta"], self.A, inputs["B"], inputs["C"], self.D, state0)
            self.last_kernel, kernel = fastest_selective_scan(*scan_inputs)
            y, states = kernel(*scan_inputs, return_states="state" in wanted)
            values = {"y": y}
            if "state" in wanted:
                values["state"] = states
                return values, {"state": states[:, -1]}
            return values, {"state": states}

        values, final = run_recurrence(
            self._step, inputs, {"state": state["state"]},
            self.hook_points(("state", "y")), self._state_at, ("state",),
            needed=("y",), first_pass=scan if fused else None, segment_pass=segment if fused else None,
        )
        gate = self.hook_gate(F.silu(z, inplace=compiled))  # z is not hooked: SiLU in place when no grad
        if compiled:
            gated = torch.mul(values["y"], gate, out=recording_buffer(gate.shape, gate.dtype, gate.device))
            out = buffered_linear(gated, self.out_proj.weight, self.out_proj.bias)
        else:
            out = self.out_proj(values["y"] * gate)
        out = self.hook_out(out)  # [batch, pos, d_model]
        return out, {"conv": new_conv_state, "state": final["state"]}

    def forward_reference(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self._run(x, state, fused=False)

    def forward_fused(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self._run(x, state, fused=True)
