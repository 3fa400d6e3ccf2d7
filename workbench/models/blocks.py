"""The residual block around a mixer: norm, mixer, residual add, optional MLP (pre-norm)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from workbench.models.config import RecurrentConfig
from workbench.models.mixers import MIXERS
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import State


class Norm(nn.Module):
    """LayerNorm, RMSNorm or identity over the last axis, with its output hooked."""

    def __init__(self, cfg: RecurrentConfig, eps: float = 1e-5):
        super().__init__()
        self.kind, self.eps = cfg.norm, eps
        if self.kind != "none":
            self.weight = nn.Parameter(torch.ones(cfg.d_model))
        if self.kind == "layernorm":
            self.bias = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_normalized = HookPoint()

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
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.W_out(self.hook_post(F.gelu(self.W_in(x))))


class RecurrentBlock(nn.Module):
    """resid_post = resid_mid + MLP(norm(resid_mid)), resid_mid = resid_pre + mixer(norm(resid_pre))."""

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        self.ln1 = Norm(cfg)
        self.mixer = MIXERS[cfg.family](cfg)
        self.mlp = MLP(cfg) if cfg.d_mlp > 0 else None
        self.ln2 = Norm(cfg) if self.mlp is not None else None
        self.hook_resid_pre = HookPoint()
        self.hook_mixer_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        if self.mlp is not None:
            self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(
        self, resid: Tensor, state: Mapping[str, Tensor] | None, path: ExecutionPath
    ) -> tuple[Tensor, State]:
        resid = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        mixed, new_state = self.mixer(self.ln1(resid), state, path)
        resid = self.hook_resid_mid(resid + self.hook_mixer_out(mixed))
        if self.mlp is not None:
            resid = resid + self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid), new_state
