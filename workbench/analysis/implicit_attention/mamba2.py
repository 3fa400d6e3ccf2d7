"""Mamba2 block as implicit attention (Dao & Gu 2024, SSD; Zimerman, Ali & Wolf 2024, eq. 12).

Per head h (P channels) of the `transformers` Mamba2 adapter (`workbench.adapters.mamba2`), with Δ,
B, C from the cache, group g(h) and A_h = −exp(A_log_h) one scalar:

    α_{t,j} = (C_t[g] · B_j[g]) Δ_j exp(Σ_{k=j+1..t} Δ_k A_h)      (the SSD matrix, one per head)

shared by the head's P channels. Modes:

- "exact": v = the x part of xBC (in-projected, before the conv). The map folds in the causal conv
  (its bias and initial conv state go to the bias term), the activation written as u = σ(c) ⊙ c
  (σ(c_j) a key-side gate), the D skip on the diagonal and the output gate SiLU(z_t) on the query
  side: Ã v + bias = y ⊙ SiLU(z), the input of the gated RMSNorm, to float precision. The map
  stops before the norm on purpose: the norm divides each position's group of channels by their
  RMS, which depends on every channel of the group, so no per-channel linear map reproduces it.
- "normed": the same map with the norm's factor w_c / rms_t[g] as one more query-side gate,
  held at its recorded value: Ã v + bias = the norm's output (the input of out_proj). Exact for
  the recorded factor, as the LSTM map is for recorded gates; the true ∂normed/∂v has a further
  term through rms_t (rank one per group and position) that this map leaves out.
  `norm_factor(model, cache, layer)` returns the factor for inspection.
- "paper": the SSD core alone, as Ali et al. 2024 write Mamba's: v = x after conv and activation
  (hook_x), Ã v + bias = y − D ⊙ x (no conv, no gate, no norm).

Channels are d_inner = H·P in the layer's order (head-major), as `hook_y` flattens them.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.analysis.implicit_attention.form import LinearForm
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["Mamba2", "gated_norm_factor"]

HOOKS = ("xBC", "x", "delta", "B", "C", "y", "gate", "normed", "initial_conv", "initial_state")


def _heads(t: Tensor) -> Tensor:
    """[b, L, H, ...] -> [b, H, L, ...]."""
    return t.transpose(1, 2)


def _channels(t: Tensor) -> Tensor:
    """[b, L, H, P] or [b, L, d] -> [b, d, L]."""
    return t.flatten(2).transpose(1, 2)


def gated_norm_factor(mixer: Any, pre_norm: Tensor) -> Tensor:
    """w_c / sqrt(mean_{group}(m²) + ε) per channel, [b, L, d], from m = y ⊙ gate [b, L, d].

    normed = factor ⊙ m, computed in at least float32 as the library's MambaRMSNormGated does.
    """
    norm, groups = mixer.hf.norm, mixer.sizes["n_groups"]
    work = torch.promote_types(pre_norm.dtype, torch.float32)
    m = pre_norm.to(work).unflatten(-1, (groups, -1))  # [b, L, G, d / G]
    rms = torch.rsqrt(m.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).expand_as(m)
    return norm.weight.detach().to(work) * rms.flatten(-2)


class Mamba2:
    """Mamba2 mixer of the `transformers` adapter (`HookedMamba2Mixer`) -> `LinearForm`."""

    families = ("mamba2",)
    modes = ("exact", "normed", "paper")
    channel_name = "d_inner"

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        return [get_act_name(q, layer) for q in HOOKS]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str) -> LinearForm:
        """The layer's operands from the cache; per-head decay and scores, per-channel gates."""
        mixer = model.blocks[layer].mixer
        hf, sz = mixer.hf, mixer.sizes
        if getattr(hf, "activation", "silu") not in ("silu", "swish"):
            raise NotImplementedError(f"the exact Mamba2 form writes the conv activation as SiLU; this "
                                      f"mixer uses {hf.activation!r}")
        H, P, G = sz["n_heads"], sz["d_head"], sz["n_groups"]
        d = H * P
        hook = partial(get_act_name, layer=layer)
        delta = _heads(cache[hook("delta")])  # [b, H, L]
        dtype = delta.dtype
        per_group = H // G
        B = _heads(cache[hook("B")]).repeat_interleave(per_group, dim=1)  # [b, H, L, N]
        C = _heads(cache[hook("C")]).repeat_interleave(per_group, dim=1)  # [b, H, L, N]
        A = mixer.A.detach().to(dtype)  # [H]
        log_decay = (delta * A[None, :, None])[..., None]  # [b, H, L, 1]: Δ_t A_h
        B_bar = B * delta[..., None]  # [b, H, L, N]: Δ_j B_j
        head_index = torch.arange(d, device=delta.device) // P  # [d]
        u = _channels(cache[hook("x")])  # [b, d, L]: scan input
        y = _channels(cache[hook("y")])  # [b, d, L]
        b, _, L = y.shape
        D = hf.D.detach().to(dtype).repeat_interleave(P)[None, :, None].expand(b, d, L)  # [b, d, L]
        state0 = cache[hook("initial_state")].flatten(1, 2)  # [b, d, N]
        common = {"head_index": head_index, "initial_state": state0}
        if mode == "paper":
            return LinearForm(log_decay, C, B_bar, value=u, output=y - D * u, value_name=hook("x"),
                              output_name=hook("y") + " − D·x (SSD core)", **common)
        x = cache[hook("xBC")][..., :d].transpose(1, 2)  # [b, d, L]: v, before the conv
        weight = hf.conv1d.weight.detach().to(dtype)[:d, 0, :]  # [d, k]
        bias = None if hf.conv1d.bias is None else hf.conv1d.bias.detach().to(dtype)[:d]  # [d]
        conv_state = cache[hook("initial_conv")][:, :d]  # [b, d, k−1]
        c = F.conv1d(torch.cat([conv_state, x], dim=-1), weight[:, None, :], bias, groups=d)  # [b, d, L]
        start = torch.cat([conv_state, torch.zeros_like(x)], dim=-1)  # only the initial conv state
        offset = F.conv1d(start, weight[:, None, :], bias, groups=d)  # [b, d, L]
        gate = cache[hook("gate")].transpose(1, 2)  # [b, d, L]
        if mode == "normed":
            factor = gated_norm_factor(mixer, (y * gate).transpose(1, 2)).to(dtype).transpose(1, 2)
            row, output = gate * factor, cache[hook("normed")].transpose(1, 2)
            output_name = hook("normed") + " (input of out_proj; the norm's 1/rms held at its recorded value)"
        else:
            row, output = gate, y * gate
            output_name = f"{hook('y')} ⊙ {hook('gate')} (input of the gated RMSNorm)"
        return LinearForm(
            log_decay, C, B_bar, value=x, output=output, value_name=hook("xBC") + "[..., :d_inner]",
            output_name=output_name, skip=D, col_scale=torch.sigmoid(c), row_scale=row,
            conv_weight=weight, conv_offset=offset, projection=hf.out_proj.weight.detach().to(dtype),
            **common,
        )

    @staticmethod
    def norm_factor(model: HookedModel, cache: dict, layer: int) -> Tensor:
        """The gated norm's per-channel factor w_c / rms_t[g], [b, d, L] ("normed" mode's extra gate)."""
        mixer = model.blocks[layer].mixer
        hook = partial(get_act_name, layer=layer)
        pre = cache[hook("y")].flatten(2) * cache[hook("gate")]  # [b, L, d]
        return gated_norm_factor(mixer, pre).to(pre.dtype).transpose(1, 2)

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: Tensor, cache: dict) -> Tensor:
        """∂target/∂(output of the form), [b, d, L], from the gradient at hook_out [b, L, d_model].

        Through out_proj, then (exact and paper modes) back through the gated RMSNorm by autograd,
        its 1/rms included, then (paper mode) through the gate.
        """
        mixer = model.blocks[layer].mixer
        g = grad_out @ mixer.hf.out_proj.weight.detach().to(grad_out.dtype)  # [b, L, d]: ∂/∂normed
        if mode == "normed":
            return g.transpose(1, 2)
        hook = partial(get_act_name, layer=layer)
        gate = cache[hook("gate")].to(g.dtype)
        pre = (cache[hook("y")].flatten(2).to(g.dtype) * gate).detach().requires_grad_(True)  # [b, L, d]
        with torch.enable_grad():
            normed = gated_norm_factor(mixer, pre) * pre
            (g,) = torch.autograd.grad(normed, pre, g.to(normed.dtype))  # ∂/∂(y ⊙ gate)
        g = g.to(grad_out.dtype)
        if mode == "paper":
            g = g * gate  # ∂/∂y
        return g.transpose(1, 2)
