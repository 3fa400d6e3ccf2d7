"""Mamba-2 from `transformers` (Dao & Gu 2024, *Transformers are SSMs*, SSD with a scalar decay per head).

Recomputed with hooks, per head h of size P, groups of heads sharing B and C:
in-projection to (z, xBC, dt); causal depthwise conv over xBC, activation; Δ_h = softplus(dt_h + b_h);
state_t[h] = exp(Δ_t[h] A_h) state_{t−1}[h] + Δ_t[h] x_t[h] ⊗ B_t[g(h)]   ([P, N] per head);
y_t[h] = state_t[h] C_t[g(h)] + D_h x_t[h]; out = out_proj(GroupRMSNorm(y ⊙ SiLU(z))).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.adapters.base import (
    AdapterBlock,
    AdapterMixer,
    HookedTransformersLM,
    mask_positions,
)
from workbench.adapters.tl_names import MAMBA2_ALIASES, layer_aliases
from workbench.kernels.cpu_compiled import compiled_selective_scan
from workbench.kernels.dispatch import fastest_selective_scan
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import Emit, State, run_recurrence
from workbench.models.specs import BP_HEADS, RESID, HookSpec

BPHP = ("batch", "pos", "n_heads", "d_head")
BPGN = ("batch", "pos", "n_groups", "d_state")


class HookedMamba2Mixer(AdapterMixer):
    """`transformers` Mamba2Mixer recomputed with every quantity hooked per head."""

    quantities = ("xBC", "x", "B", "C", "delta", "state", "y", "gate", "normed", "out")
    state_names = ("conv", "state")

    def __init__(self, hf_mixer: nn.Module, sizes: Mapping[str, int]):
        super().__init__(sizes)
        self.hf = hf_mixer  # shares in_proj, conv1d, dt_bias, A_log, D, norm, out_proj

    def hook_specs(self) -> dict[str, HookSpec]:
        return {
            "xBC": (("batch", "pos", "d_conv_channels"), "in-projected (x, B, C) before the conv"),
            "x": (BPHP, "x_t per head: act(conv(xBC))'s x part, the scan's input"),
            "B": (BPGN, "input matrix B_t per group"),
            "C": (BPGN, "output matrix C_t per group"),
            "delta": (BP_HEADS, "step size Δ_t = softplus(dt_t + b_Δ) per head"),
            "state": (("batch", "pos", "n_heads", "d_head", "d_state"),
                      "SSM state s_t = exp(Δ_t A) s_{t−1} + Δ_t x_t ⊗ B_t, per head"),
            "y": (BPHP, "scan output y_t = s_t C_t + D x_t, per head"),
            "gate": (("batch", "pos", "d_inner"), "gate SiLU(z_t)"),
            "normed": (("batch", "pos", "d_inner"), "grouped RMSNorm(y_t ⊙ gate_t)"),
            "out": (RESID, "block output out_proj(normed_t)"),
        }

    def state_specs(self) -> dict[str, HookSpec]:
        return {
            "conv": (("batch", "d_conv_channels", "d_conv-1"), "the last d_conv − 1 conv inputs xBC"),
            "state": (("batch", "n_heads", "d_head", "d_state"), "initial SSM state s_{-1}"),
        }

    @property
    def A(self) -> Tensor:
        return -torch.exp(self.hf.A_log)  # [n_heads]

    def _per_head(self, BC: Tensor) -> Tensor:
        """[..., n_groups, d_state] -> [..., n_heads, d_state]: each group serves n_heads / n_groups heads."""
        return BC.repeat_interleave(self.sizes["n_heads"] // self.sizes["n_groups"], dim=-2)

    def _step(self, inputs: Mapping[str, Tensor], state: State, emit: Emit) -> State:
        x, delta = inputs["x"], inputs["delta"]  # [batch, H, P], [batch, H]
        B, C = self._per_head(inputs["B"]), self._per_head(inputs["C"])  # [batch, H, N]
        decay = torch.exp(delta * self.A)[..., None, None]  # [batch, H, 1, 1]
        s = emit("state", decay * state["state"] + (delta[..., None] * x)[..., None] * B[:, :, None, :])
        emit("y", (s * C[:, :, None, :]).sum(-1) + self.hf.D[:, None] * x)
        return {"state": s}

    @staticmethod
    def _state_at(values: Mapping[str, Tensor], t: int) -> State:
        return {"state": values["state"][:, t]}

    def _scan(self, inputs: Mapping[str, Tensor], s0: Tensor,
              wanted: set[str]) -> tuple[dict[str, Tensor], State]:
        """The heads as one S6 scan whose channels are their P units (Δ, A shared per head, B and C per group).

        The compiled C++ scan takes B and C per group and writes every head's state straight into one
        [batch, pos, H, P, N] buffer; the other kernels (Triton, chunked) run once per group.
        """
        H, P, N = self.sizes["n_heads"], self.sizes["d_head"], self.sizes["d_state"]
        x, delta, B, C = inputs["x"], inputs["delta"], inputs["B"], inputs["C"]
        batch, pos = x.shape[:2]
        u = x.reshape(batch, pos, H * P)  # [batch, pos, H·P]
        dt = delta.repeat_interleave(P, dim=-1)  # [batch, pos, H·P]
        A = self.A.repeat_interleave(P)[:, None].expand(H * P, N)  # [H·P, N]
        D = self.hf.D.repeat_interleave(P)  # [H·P]
        h0 = s0.reshape(batch, H * P, N)
        record = "state" in wanted
        name, kernel = fastest_selective_scan(u, dt, A, B[:, :, 0], C[:, :, 0], D, h0)  # Triton / C++ / chunked
        if kernel is compiled_selective_scan:  # every group in one call: B, C [batch, pos, G, N]
            self.last_kernel = f"{name}, groups in one call"
            y, s = kernel(u, dt, A, B, C, D, h0, return_states=record)
        else:
            self.last_kernel = f"{name}, per group"
            y, s = self._scan_per_group(kernel, u, dt, A, B, C, D, h0, record)
        values = {"y": y.reshape(batch, pos, H, P)}
        if record:
            values["state"] = s.reshape(batch, pos, H, P, N)
            return values, {"state": values["state"][:, -1]}
        return values, {"state": s.reshape(batch, H, P, N)}

    def _scan_per_group(self, kernel: Callable[..., tuple[Tensor, Tensor]], u: Tensor, dt: Tensor, A: Tensor,
                        B: Tensor, C: Tensor, D: Tensor, h0: Tensor, record: bool) -> tuple[Tensor, Tensor]:
        """One kernel call per group of heads (kernels taking one B, C per call); joined along channels."""
        G = self.sizes["n_groups"]
        width = u.shape[-1] // G  # channels per group
        parts = [kernel(u[..., g * width:(g + 1) * width], dt[..., g * width:(g + 1) * width],
                        A[g * width:(g + 1) * width], B[:, :, g], C[:, :, g], D[g * width:(g + 1) * width],
                        h0[:, g * width:(g + 1) * width], return_states=record) for g in range(G)]
        if G == 1:
            return parts[0]
        return torch.cat([y for y, _ in parts], dim=2), torch.cat([s for _, s in parts], dim=-2)

    def mix(self, x_in: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        hf, sz = self.hf, self.sizes
        d_inner, H, P, G, N = sz["d_inner"], sz["n_heads"], sz["d_head"], sz["n_groups"], sz["d_state"]
        batch, pos = x_in.shape[:2]
        x_in = mask_positions(x_in, mask)
        # Matmuls and convs over weight slices (no views of one output), so hooks may edit in place.
        split = [d_inner, sz["d_conv_channels"], H]
        weights = hf.in_proj.weight.split(split, dim=0)
        biases = (None,) * 3 if hf.in_proj.bias is None else hf.in_proj.bias.split(split)
        z, xBC, dt = self._scale_projections(*(F.linear(x_in, w, b) for w, b in zip(weights, biases, strict=True)))
        xBC = self.hook_xBC(xBC)  # [batch, pos, conv channels]
        padded = torch.cat([state["conv"], xBC.transpose(1, 2)], dim=-1)  # [batch, channels, k-1+pos]
        new_conv = padded[..., padded.shape[-1] - (sz["d_conv"] - 1):]
        parts = []
        for lo, hi in ((0, d_inner), (d_inner, d_inner + G * N), (d_inner + G * N, d_inner + 2 * G * N)):
            bias = None if hf.conv1d.bias is None else hf.conv1d.bias[lo:hi]
            conv = F.conv1d(padded[:, lo:hi], hf.conv1d.weight[lo:hi], bias, groups=hi - lo)
            parts.append(mask_positions(hf.act(conv).transpose(1, 2), mask))  # [batch, pos, hi − lo]
        x = self.hook_x(parts[0].reshape(batch, pos, H, P))
        B = self.hook_B(parts[1].reshape(batch, pos, G, N))
        C = self.hook_C(parts[2].reshape(batch, pos, G, N))
        low, high = hf.time_step_limit
        delta = self.hook_delta(torch.clamp(F.softplus(dt + hf.dt_bias), low, high))  # [batch, pos, H]
        inputs = {"x": x, "delta": delta, "B": B, "C": C}
        values, final = run_recurrence(
            self._step, inputs, {"state": state["state"]}, self.hook_points(("state", "y")),
            self._state_at, ("state",), needed=("y",),
            first_pass=(lambda wanted: self._scan(inputs, state["state"], wanted)) if fused else None,
            segment_pass=(lambda wanted, start, stop, before: self._scan(
                {name: value[:, start:stop] for name, value in inputs.items()}, before["state"], wanted,
            )) if fused else None,
        )
        gate = self.hook_gate(F.silu(z))  # [batch, pos, d_inner]
        y = values["y"].reshape(batch, pos, d_inner)
        normed = self.hook_normed(self._gated_norm(y, gate))  # [batch, pos, d_inner]
        return self.hook_out(hf.out_proj(normed.to(x_in.dtype))), {"conv": new_conv, "state": final["state"]}


    def _scale_projections(self, z: Tensor, xBC: Tensor, dt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The in-projection's three parts as the mixer uses them (Falcon-H1 scales them; Mamba2 does not)."""
        return z, xBC, dt

    def _gated_norm(self, y: Tensor, gate: Tensor) -> Tensor:
        """RMSNorm of y ⊙ gate over each group of d_inner / n_groups units, times the norm's weight.

        Computed in at least float32, as the library's MambaRMSNormGated does.
        """
        norm, groups = self.hf.norm, self.sizes["n_groups"]
        work = torch.promote_types(y.dtype, torch.float32)
        v = (y.to(work) * gate.to(work)).unflatten(-1, (groups, -1))  # [batch, pos, G, d_inner / G]
        v = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * v.flatten(-2).to(y.dtype)


class HookedMamba2(HookedTransformersLM):
    """Mamba2ForCausalLM under the hook contract (Dao & Gu 2024)."""

    family = "mamba2"
    generate_with_padding = True  # padded inputs are zeroed before the conv and the scan: the state stays zero

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        cfg, backbone = hf_model.config, hf_model.backbone
        mixer = backbone.layers[0].mixer
        d_inner = mixer.intermediate_size
        sizes = {
            "d_model": cfg.hidden_size, "d_inner": d_inner, "n_heads": mixer.num_heads,
            "d_head": mixer.head_dim, "n_groups": mixer.n_groups, "d_state": mixer.ssm_state_size,
            "d_conv": cfg.conv_kernel, "d_conv-1": cfg.conv_kernel - 1, "d_conv_channels": mixer.conv_dim,
            "d_vocab": cfg.vocab_size,
        }
        blocks = [AdapterBlock(layer.norm, HookedMamba2Mixer(layer.mixer, sizes)) for layer in backbone.layers]
        super().__init__(hf_model, sizes, blocks, ln_final=backbone.norm_f, embed=backbone.embeddings,
                         unembed=hf_model.lm_head, path=path)
        self.setup()
        # TransformerLens 4.x's SSM bridge names (workbench.adapters.tl_names)
        self.hook_aliases = layer_aliases(MAMBA2_ALIASES, len(self.blocks), set(self.hook_dict))
