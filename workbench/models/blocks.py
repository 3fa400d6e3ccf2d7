"""The residual block around a mixer: norm, mixer, residual add, optional MLP (pre-norm)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.models.config import RecurrentConfig
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.mixers import MIXERS, Mixer
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import State
from workbench.models.specs import RESID, HookSpec


class Norm(nn.Module):
    """LayerNorm, RMSNorm or identity over the last axis, with its output hooked."""

    def __init__(self, cfg: RecurrentConfig, eps: float = 1e-5):
        super().__init__()
        self.kind, self.eps = cfg.norm, eps
        if self.kind != "none":
            self.weight = nn.Parameter(torch.ones(cfg.d_model))
        if self.kind == "layernorm":
            self.bias = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_normalized = ScopedHookPoint()

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "layernorm":
            x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        elif self.kind == "rmsnorm":
            x = x * (x.pow(2).mean(-1, keepdim=True) + self.eps).rsqrt() * self.weight
        return self.hook_normalized(x)


class MLP(nn.Module):
    """Two-layer GELU MLP applied per position."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        self.W_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.W_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.hook_post = ScopedHookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.W_out(self.hook_post(F.gelu(self.W_in(x))))


class ResidualBlock(nn.Module):
    """What every residual block shares, native or adapted: a mixer (`self.mixer`) whose state is the
    block's, and the hook specs in firing order; subclasses add theirs after the mixer's output."""

    mixer: Mixer

    def hook_specs(self, layer: int) -> dict[str, HookSpec]:
        """Hook names relative to the block -> (dims, meaning), in firing order."""
        return {
            "hook_resid_pre": (RESID, f"residual stream entering block {layer}"),
            "ln1.hook_normalized": (RESID, "normalised input to the mixer"),
            **self.mixer.block_hook_specs(),
            "hook_mixer_out": (RESID, "mixer output added to the residual"),
            **self.extra_hook_specs(),
            "hook_resid_post": (RESID, f"residual stream leaving block {layer}"),
        }

    def extra_hook_specs(self) -> dict[str, HookSpec]:
        """The block's hooks between `hook_mixer_out` and `hook_resid_post` (residual mid, MLP)."""
        return {}

    def zero_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        """The block's zero state: its mixer's (the model's `initial_state` asks every block)."""
        return self.mixer.zero_state(batch, device, dtype)


class RecurrentBlock(ResidualBlock):
    """resid_post = resid_mid + MLP(norm(resid_mid)), resid_mid = resid_pre + mixer(norm(resid_pre))."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        self.ln1 = Norm(cfg)
        self.mixer = MIXERS[cfg.family](cfg)
        self.mlp = MLP(cfg) if cfg.d_mlp > 0 else None
        self.ln2 = Norm(cfg) if self.mlp is not None else None
        self.hook_resid_pre = ScopedHookPoint()
        self.hook_mixer_out = ScopedHookPoint()
        self.hook_resid_mid = ScopedHookPoint()
        if self.mlp is not None:
            self.hook_mlp_out = ScopedHookPoint()
        self.hook_resid_post = ScopedHookPoint()

    def extra_hook_specs(self) -> dict[str, HookSpec]:
        specs: dict[str, HookSpec] = {"hook_resid_mid": (RESID, "residual after the mixer")}
        if self.mlp is not None:
            specs["ln2.hook_normalized"] = (RESID, "normalised input to the MLP")
            specs["mlp.hook_post"] = (("batch", "pos", "d_mlp"), "MLP hidden GELU")
            specs["hook_mlp_out"] = (RESID, "MLP output added to the residual")
        return specs

    def forward(
        self, resid: Tensor, state: Mapping[str, Tensor] | None, path: ExecutionPath,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        """resid [batch, pos, d_model] -> (resid_post, the mixer's final state); mask: see `Mixer`."""
        resid = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        mixed, new_state = self.mixer(self.ln1(resid), state, path, mask)
        resid = self.hook_resid_mid(resid + self.hook_mixer_out(mixed))
        if self.mlp is not None:
            resid = resid + self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid), new_state
