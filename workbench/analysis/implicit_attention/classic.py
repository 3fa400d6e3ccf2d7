"""LSTM cell state and GRU hidden state as implicit attention, with the gates held fixed.

LSTM (Hochreiter & Schmidhuber 1997): c_t = f_t c_{t−1} + i_t g_t, so with the recorded gates as
constants α_{t,j} = i_j ∏_{k=j+1..t} f_k and v = g (Zimerman et al. 2024 treat gated layers the same
way: the gates are data-dependent coefficients). GRU (Cho et al. 2014, PyTorch's convention):
h_t = z_t h_{t−1} + (1 − z_t) n_t, so α_{t,j} = (1 − z_j) ∏ z_k and v = n. Both reproduce the
recorded state exactly; the Jacobian equals Ã only with the gates detached, since here the gates
themselves depend on the state.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch

from workbench.analysis.implicit_attention.form import LinearForm
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["GRU", "LSTM"]


class LSTM:
    """LSTM mixer (`workbench.models.mixers.classic.LSTMMixer`): the cell state c."""

    families = ("lstm",)
    modes = ("exact",)
    channel_name = "d_hidden"

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        return [get_act_name(q, layer) for q in ("i", "f", "g", "o", "c", "initial_c")]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str) -> LinearForm:
        hook = partial(get_act_name, layer=layer)
        i, f, g, c = (cache[hook(q)].transpose(1, 2) for q in ("i", "f", "g", "c"))  # [b, d, L]
        return LinearForm(
            torch.log(f)[..., None], torch.ones_like(f[..., :1, :1, None]), i[..., None],
            value=g, output=c, value_name=hook("g"), output_name=hook("c"),
            initial_state=cache[hook("initial_c")][..., None],
        )

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: torch.Tensor,
                    cache: dict) -> torch.Tensor:
        """∂target/∂c_t through the readout h_t = o_t tanh(c_t), W_out (gates held fixed)."""
        hook = partial(get_act_name, layer=layer)
        weight = model.blocks[layer].mixer.W_out.weight.detach().to(grad_out.dtype)
        grad_h = grad_out @ weight  # [b, L, d]
        return (grad_h * cache[hook("o")] * (1 - torch.tanh(cache[hook("c")]) ** 2)).transpose(1, 2)


class GRU:
    """GRU mixer (`workbench.models.mixers.classic.GRUMixer`): the hidden state h."""

    families = ("gru",)
    modes = ("exact",)
    channel_name = "d_hidden"

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        return [get_act_name(q, layer) for q in ("z", "n", "h", "initial_h")]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int, mode: str) -> LinearForm:
        hook = partial(get_act_name, layer=layer)
        z, n, h = (cache[hook(q)].transpose(1, 2) for q in ("z", "n", "h"))  # [b, d, L]
        return LinearForm(
            torch.log(z)[..., None], torch.ones_like(z[..., :1, :1, None]), (1 - z)[..., None],
            value=n, output=h, value_name=hook("n"), output_name=hook("h"),
            initial_state=cache[hook("initial_h")][..., None],
            projection=model.blocks[layer].mixer.W_out.weight.detach().to(z.dtype),
        )

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: torch.Tensor,
                    cache: dict) -> torch.Tensor:
        """∂target/∂h through the readout W_out only, [b, d, L]."""
        weight = model.blocks[layer].mixer.W_out.weight.detach().to(grad_out.dtype)
        return (grad_out @ weight).transpose(1, 2)
