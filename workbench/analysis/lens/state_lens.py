"""A lens on the recurrent *state* rather than the residual stream: for each layer, an affine map
from the mixer's vector state h_t [d_hidden] into the final residual stream, decoded by the model's
final norm and unembedding. The tuned lens's recipe (Belrose et al. 2023, eq. 3 and its training),
moved from the residual stream to the state that Paulo, Marshall & Belrose 2024 leave unread.

It asks how much of the next character a layer's memory alone already holds. Each map starts as
the block's own output projection (the mixer writes W_out h + b_out into the residual stream), so
before training it decodes exactly what the state contributes directly.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from workbench.analysis.lens.logit_lens import Layer, Unembedding, model_name
from workbench.analysis.lens.tuned_lens import LensMismatchError, fit_translators
from workbench.errors import UnknownHookError
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["StateLens", "vector_states"]


def vector_states(model: HookedModel, layer: int = 0) -> tuple[str, ...]:
    """The carried states of `layer` hooked as [batch, pos, d_hidden], the width a state lens's map
    reads (LSTM h and c, GRU h; none for S6, whose state is a [d_inner, d_state] matrix)."""
    specs = model.hook_specs()
    return tuple(
        q for q in model.state_quantities(layer)
        if specs[get_act_name(q, layer)][0] == ("batch", "pos", "d_hidden")
    )


class StateLens(nn.Module):
    """Per-layer affine maps state -> final residual, decoded by the model's unembedding; `fit` trains
    them with the tuned lens's recipe. `quantity` is the mixer's state hook (`h`, or `c` for an LSTM).
    """

    def __init__(self, model: HookedModel, quantity: str | None = None):
        super().__init__()
        family, states = model.cfg.family, vector_states(model)
        if not states:
            raise ValueError(
                f"a {family} mixer's recurrent state is not a vector (S6 carries a [d_inner, d_state] "
                "matrix); a state lens reads a [d_hidden] state, such as an LSTM's h and c"
            )
        quantity = quantity or states[0]  # h first: what the block's own output projection reads
        if quantity not in states:
            raise UnknownHookError(
                get_act_name(quantity, 0),
                message=f"{quantity!r} is not a {family} state; use one of " + ", ".join(states),
            )
        self.__dict__["model"] = model  # a reference, not a registered submodule
        self.unembedding = Unembedding(model)
        self.unembedding_hash = self.unembedding.fingerprint()
        self.model_name = model_name(model)
        self.quantity = quantity
        self.name = f"state lens ({quantity})"
        self.translators = nn.ModuleList(_initial_map(block, model.cfg) for block in model.blocks)
        self.history_: list[dict[str, Any]] = []
        self.training_: dict[str, Any] = {}

    @property
    def layers(self) -> list[Layer]:
        return list(range(len(self.model.blocks)))

    def hooks(self) -> dict[Layer, str]:
        """Layer -> the state hook it reads, `blocks.{l}.mixer.hook_{quantity}`."""
        return {layer: get_act_name(self.quantity, layer) for layer in self.layers}

    def forward(self, state: Tensor, layer: Layer) -> Tensor:
        """state [..., d_hidden] of `layer` -> logits [..., d_vocab]."""
        n = len(self.translators)
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise UnknownHookError(
                get_act_name(self.quantity, layer),
                message=f"unknown layer {layer!r}: a state lens reads the model's {n} layer(s), 0..{n - 1}",
            )
        return self.unembedding(self.translators[layer](state))

    def check_model(self, model: HookedModel) -> None:
        """Raise `LensMismatchError` unless `model` has this lens's unembedding."""
        found = Unembedding(model).fingerprint()
        if found != self.unembedding_hash or len(model.blocks) != len(self.translators):
            raise LensMismatchError(
                f"this state lens was trained for model {self.model_name!r} (unembedding "
                f"{self.unembedding_hash}); the given model {model_name(model)!r} has unembedding {found}"
            )

    def fit(self, text: Any, **settings: Any) -> StateLens:
        """Train the maps on `text` with the tuned lens's recipe (see `TunedLens.fit`); returns self."""
        self.check_model(self.model)
        self.history_, self.training_ = fit_translators(self, text, self.layers, **settings)
        return self

    def history_frame(self) -> Any:
        """`history_` as a DataFrame: one row per step, a column of KL (bits) per layer."""
        import pandas as pd

        return pd.DataFrame(self.history_)


def _initial_map(block: nn.Module, cfg: Any) -> nn.Linear:
    """The block's own output projection W_out h + b_out [d_hidden -> d_model], or zeros without one."""
    projection = getattr(block.mixer, "W_out", None)
    if isinstance(projection, nn.Linear):
        linear = copy.deepcopy(projection)
    else:
        param = next(block.parameters())
        linear = nn.Linear(cfg.d_hidden, cfg.d_model, device=param.device, dtype=param.dtype)
        with torch.no_grad():
            linear.weight.zero_()
            linear.bias.zero_()
    linear.requires_grad_(True)
    return linear
