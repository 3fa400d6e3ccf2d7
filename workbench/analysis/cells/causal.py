"""Which unit's state moves the predictions when it is pushed: a rule for a causal demo that shows.

Adding a fixed amount to a saturated LSTM cell (|c| in the tens, tanh(c) = ±1) changes nothing
downstream, so choosing the unit to edit by its size picks a unit whose edit is float noise. Here
every unit of one layer is pushed in turn (the units side by side in one batch) and the change in
the next-character log-probabilities after the push is measured, so a demo can choose the unit
whose push is known to matter, on text other than the text it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.analysis.cells.recording import hook_name, resolve_layers
from workbench.analysis.tokens import tokenize

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["push_effects"]


@torch.no_grad()
def push_effects(
    model: HookedModel,
    text: str,
    positions: Sequence[int],
    layer: int = 0,
    quantity: str = "c",
    *,
    delta: float = 5.0,
    horizon: int = 40,
    tokenizer: Any = None,
) -> np.ndarray:
    """[len(positions), units]: for each position and each unit of `quantity` in `layer`, the
    largest |change| of any next-character log-probability in the `horizon` characters from that
    position on when `delta` is added to that unit there (before it, the change is zero)."""
    tokens = tokenize(model, text, tokenizer)  # [pos]
    (layer,) = resolve_layers(model, layer)
    name = hook_name(layer, quantity)
    if not positions:
        raise ValueError("no positions given")
    for p in positions:
        if not 0 <= p < len(tokens):
            raise IndexError(f"position {p} is outside the text of {len(tokens)} characters")
    out = []
    for p in positions:
        prefix, rest = tokens[:p][None], tokens[p : p + horizon][None]  # [1, p], [1, H]
        state = model(prefix.to(model.device), return_state=True)[1] if p else None
        base, cache = model.run_with_cache(rest.to(model.device), initial_state=state, names_filter=[name])
        units = cache[name].shape[2]
        rows = torch.arange(units)
        many = None if state is None else [{k: v.expand(units, *v.shape[1:]).contiguous() for k, v in s.items()}
                                           for s in state]

        def push(value: torch.Tensor, hook: Any, rows: torch.Tensor = rows) -> torch.Tensor:
            value[rows, 0, rows] += delta  # batch row u pushes unit u, at the first position of the rest
            return value

        edited = model.run_with_hooks(rest.expand(units, -1).to(model.device), initial_state=many,
                                      fwd_hooks=[(name, push)])  # [units, H, d_vocab]
        change = (edited.float().log_softmax(-1) - base.float().log_softmax(-1)).abs().amax(dim=(1, 2))
        out.append(change.cpu().numpy())  # [units]
    return np.stack(out)
