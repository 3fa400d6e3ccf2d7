"""minGRU and minLSTM as implicit attention (Feng et al. 2024; Zimerman et al. 2024, eq. 3 form).

minGRU: h_t = (1 − z_t) h_{t−1} + z_t h̃_t, so α_{t,j} = z_j ∏_{k=j+1..t} (1 − z_k) and v = h̃.
minLSTM: h_t = f'_t h_{t−1} + i'_t h̃_t (normalised gates), so α_{t,j} = i'_j ∏_{k=j+1..t} f'_k.
The gates depend on the input only, so these maps are the layers themselves: Ã h̃ + bias = h
(bias: the initial state times the product of every decay so far). One scalar decay per channel.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch

from workbench.analysis.implicit_attention.form import LinearForm
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["MinGRU", "MinLSTM"]


class _Minimal:
    """Shared frame: decay a_t and input weight from two hooks, value h̃, output h, readout W_out."""

    families: tuple[str, ...] = ()
    modes = ("exact",)  # nothing to drop: the papers' map is the exact one
    channel_name = "d_hidden"
    gate_hooks: tuple[str, str] = ("", "")

    @classmethod
    def hook_names(cls, layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        names = (*cls.gate_hooks, "h_tilde", "h", "initial_h")
        return [get_act_name(q, layer) for q in names]

    @staticmethod
    def decay_and_weight(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def form(cls, model: HookedModel, cache: dict, layer: int, mode: str) -> LinearForm:
        hook = partial(get_act_name, layer=layer)
        first, second = (cache[hook(q)].transpose(1, 2) for q in cls.gate_hooks)  # [b, d, L]
        decay, weight = cls.decay_and_weight(first, second)
        mixer = model.blocks[layer].mixer
        return LinearForm(
            torch.log(decay)[..., None], torch.ones_like(decay[..., :1, :1, None]),
            weight[..., None],  # [b, d, L, 1]
            value=cache[hook("h_tilde")].transpose(1, 2), output=cache[hook("h")].transpose(1, 2),
            value_name=hook("h_tilde"), output_name=hook("h"),
            initial_state=cache[hook("initial_h")][..., None],  # [b, d, 1]
            projection=mixer.W_out.weight.detach().to(decay.dtype),
        )

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: torch.Tensor,
                    cache: dict) -> torch.Tensor:
        """∂target/∂h through the readout W_out only, [b, d, L] (the recurrence is inside Ã)."""
        weight = model.blocks[layer].mixer.W_out.weight.detach().to(grad_out.dtype)
        return (grad_out @ weight).transpose(1, 2)


class MinGRU(_Minimal):
    """minGRU: decay 1 − z_t, input weight z_j (Feng et al. 2024, eq. for minGRU)."""

    families = ("mingru",)
    gate_hooks = ("z", "z")

    @staticmethod
    def decay_and_weight(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1 - first, first  # the model's own a = 1 − z, so exp(log a) is a to rounding


class MinLSTM(_Minimal):
    """minLSTM: decay f'_t, input weight i'_j (both already normalised in the hooks)."""

    families = ("minlstm",)
    gate_hooks = ("f", "i")

    @staticmethod
    def decay_and_weight(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return first, second
