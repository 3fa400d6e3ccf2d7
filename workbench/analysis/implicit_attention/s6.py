"""S6 / Mamba block as implicit attention (Ali et al. 2024, eq. 9–12; Zimerman et al. 2024, eq. 12).

Per channel d, with Δ, B, C from the cache and A = −exp(A_log):

- "exact": v = x (the in-projected input, before the conv), and the map folds in the causal conv
  (weights w, bias and initial conv state as the bias term), SiLU written as u = σ(c) ⊙ c with σ(c)
  a gate on the key side, the D skip on the diagonal and the output gate SiLU(z) on the query side:
  Ã v + bias = y ⊙ SiLU(z), the input of out_proj, to float precision.
- "paper": the S6 core alone, as Ali et al. 2024 and both papers' code compute it: v = u (the scan
  input after conv and SiLU), α_{t,j} = C_t · (∏_{k=j+1..t} exp(Δ_k A)) Δ_j B_j, reproducing
  y − D ⊙ u (no D skip, no conv bias, no gate).

The same form serves our S6 mixer and the `transformers` Mamba adapter (`workbench.adapters.mamba`),
whose mixer hooks the same quantities and keeps the library's parameters under `mixer.hf`.
FalconMamba's RMS norms act on Δ, B and C, which the form takes from the cache as they are.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from workbench.analysis.implicit_attention.form import LinearForm
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["S6", "s6_parameters"]

HOOKS = ("x", "conv", "delta", "B", "C", "y", "gate", "initial_conv", "initial_state")


def s6_parameters(mixer: Any) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Conv1d, torch.nn.Linear]:
    """(A [d, n], D [d], conv1d, out_proj) of our S6 mixer or of a `transformers` Mamba adapter's mixer.

    The form writes the activation as u = σ(c) ⊙ c, so a mixer with another activation is refused.
    """
    hf = getattr(mixer, "hf", None)
    if hf is None:
        return mixer.A, mixer.D, mixer.conv1d, mixer.out_proj
    if getattr(hf, "activation", "silu") not in ("silu", "swish"):
        raise NotImplementedError(f"the exact S6 form writes the conv activation as SiLU; this mixer uses "
                                  f"{hf.activation!r}")
    return mixer.A, getattr(mixer, "D", hf.D), hf.conv1d, hf.out_proj  # Zamba's mixer flattens its per-head D


class S6:
    """S6 mixer (`workbench.models.mixers.s6.S6Mixer`) -> `LinearForm`."""

    families = ("s6", "mamba", "falcon_mamba")
    modes = ("exact", "paper")
    channel_name = "d_inner"

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        return [get_act_name(q, layer) for q in HOOKS]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str) -> LinearForm:
        """The layer's operands from the cache (parameters detached: the map is data, not a graph)."""
        hook = partial(get_act_name, layer=layer)
        B, C = cache[hook("B")][:, None], cache[hook("C")][:, None]  # [b, 1, L, n]
        return S6.form_with(model, cache, layer, mode, B, C)

    @staticmethod
    def form_with(model: HookedModel, cache: dict, layer: int, mode: str, B: torch.Tensor,
                  C: torch.Tensor) -> LinearForm:
        """`form` with B and C given as [b, 1 or d_inner, L, n] (shared by all channels, or per channel)."""
        A, D, conv1d, out_proj = s6_parameters(model.blocks[layer].mixer)
        hook = partial(get_act_name, layer=layer)
        x, u, delta = (cache[hook(q)].transpose(1, 2) for q in ("x", "conv", "delta"))  # [b, d, L]
        A = A.detach().to(delta.dtype)  # [d, n]
        log_decay = delta[..., None] * A[None, :, None, :]  # [b, d, L, n]: Δ_t A
        B_bar = B * delta[..., None]  # [b, d, L, n]: Δ_j B_j
        y = cache[hook("y")].transpose(1, 2)  # [b, d, L]
        D = D.detach().to(y.dtype)[None, :, None]  # [1, d, 1]
        state0 = cache[hook("initial_state")]  # [b, d, n]
        if mode == "paper":
            return LinearForm(log_decay, C, B_bar, value=u, output=y - D * u,
                              value_name=hook("conv"), output_name=f"{hook('y')} − D·u (S6 core)",
                              initial_state=state0)
        weight = conv1d.weight.detach().to(x.dtype)[:, 0, :]  # [d, k]
        bias = None if conv1d.bias is None else conv1d.bias.detach().to(x.dtype)  # [d]
        conv_state = cache[hook("initial_conv")]  # [b, d, k−1]
        padded = torch.cat([conv_state, x], dim=-1)  # [b, d, k−1+L]
        c = F.conv1d(padded, weight[:, None, :], bias, groups=weight.shape[0])  # [b, d, L] pre-SiLU
        start = torch.cat([conv_state, torch.zeros_like(x)], dim=-1)  # only the initial conv state
        offset = F.conv1d(start, weight[:, None, :], bias, groups=weight.shape[0])  # [b, d, L]
        gate = cache[hook("gate")].transpose(1, 2)  # [b, d, L]
        return LinearForm(
            log_decay, C, B_bar, value=x, output=y * gate,
            value_name=hook("x"), output_name=f"{hook('y')} ⊙ {hook('gate')} (input of out_proj)",
            skip=D.expand_as(y), col_scale=torch.sigmoid(c), row_scale=gate,
            conv_weight=weight, conv_offset=offset, initial_state=state0,
            projection=out_proj.weight.detach().to(x.dtype),
        )

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: torch.Tensor,
                    cache: dict) -> torch.Tensor:
        """∂target/∂(output of the form), [b, d, L], from the gradient at hook_out [b, L, d_model]."""
        out_proj = s6_parameters(model.blocks[layer].mixer)[3]
        g = grad_out @ out_proj.weight.detach().to(grad_out.dtype)  # [b, L, d]: ∂/∂(y ⊙ gate)
        if mode == "paper":
            g = g * cache[get_act_name("gate", layer)]  # ∂/∂y
        return g.transpose(1, 2)
