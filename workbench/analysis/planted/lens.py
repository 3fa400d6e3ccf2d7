"""A model with a known answer for the tuned lens: its last block is an exact affine map, so the
best translator for the layer before it is known (Belrose et al. 2023, eq. 3, with zero error).

The last block's mixer output is replaced, by a permanent hook, with (A - I) h + b where h is the
block's input: the final residual is exactly A h + b. A fitted tuned lens must recover A and b
(up to what the final norm hides: with `norm="none"`, exactly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from workbench.analysis.planted.base import planted_lm
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models import HookedRecurrentLM

__all__ = ["planted_affine_lm"]


def planted_affine_lm(
    family: str = "gru",
    n_layers: int = 2,
    d_model: int = 8,
    norm: str = "none",
    unembed_scale: float = 3.0,
    seed: int = 0,
    tokenizer: Any = None,
) -> HookedRecurrentLM:
    """A random model whose last block maps its input h to A h + b exactly; `model.planted` holds
    `{"layer": n_layers - 2, "A": [d_model, d_model], "b": [d_model]}`.

    A is a random rotation times scales in [0.5, 1.5], b random: far from the identity, so the
    logit lens at that layer is poor while the ideal tuned lens is perfect. `unembed_scale`
    sharpens the output distribution so that the KL objective is well conditioned.
    """
    if n_layers < 2:
        raise ValueError("the planted map needs at least two layers")
    model = planted_lm(tokenizer, seed, family=family, n_layers=n_layers, d_model=d_model, d_hidden=d_model,
                       norm=norm, d_state=4)
    generator = torch.Generator().manual_seed(seed + 1)
    q, _ = torch.linalg.qr(torch.randn(d_model, d_model, generator=generator))
    a = q * (0.5 + torch.rand(d_model, generator=generator))  # [d_model, d_model]
    b = 0.5 * torch.randn(d_model, generator=generator)  # [d_model]
    with torch.no_grad():
        model.unembed.weight.mul_(unembed_scale)
    last = n_layers - 1
    block_input: dict[str, Tensor] = {}

    def keep_input(resid: Tensor, hook: Any) -> None:  # resid [batch, pos, d_model]
        block_input["h"] = resid

    def affine_mixer(mixed: Tensor, hook: Any) -> Tensor:  # -> [batch, pos, d_model]
        h = block_input["h"]
        return h @ (a - torch.eye(d_model, dtype=h.dtype)).T.to(h.device) + b.to(h)

    model.add_hook(get_act_name("resid_pre", last), keep_input, is_permanent=True)
    model.add_hook(get_act_name("mixer_out", last), affine_mixer, is_permanent=True)
    model.planted = {"layer": last - 1, "A": a, "b": b}
    model.eval()
    return model
