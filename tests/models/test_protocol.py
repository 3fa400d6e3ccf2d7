"""The `HookedModel` Protocol: native models satisfy it, and `state_quantities` reads the mixers'
`state_names`, so no analysis keeps its own table of which quantity is a family's state."""

from __future__ import annotations

import pytest
import torch

from workbench.models.protocol import HookedModel, carried_state

from .conftest import small_lm

# What the per-family tables said before they were derived from the mixers.
EXPECTED = {"elman": ("h",), "lstm": ("h", "c"), "gru": ("h",), "mingru": ("h",), "minlstm": ("h",),
            "s6": ("state",)}
CARRIED = {"elman": "h", "lstm": "c", "gru": "h", "mingru": "h", "minlstm": "h", "s6": "state"}


def test_a_native_model_is_a_hooked_model(family):
    model = small_lm(family)
    assert isinstance(model, HookedModel)
    assert model.device == torch.device("cpu")


def test_state_quantities_are_the_hooked_states_of_each_family(family):
    model = small_lm(family)
    for layer in range(model.cfg.n_layers):
        assert model.state_quantities(layer) == EXPECTED[family]
        assert carried_state(model, layer) == CARRIED[family]
    for name in model.state_quantities(-1):
        assert f"blocks.1.mixer.hook_{name}" in model.hook_dict


def test_a_layer_without_a_hooked_state_has_no_carried_state():
    class NoState:
        cfg = type("Cfg", (), {"family": "attention"})()

        def state_quantities(self, layer: int) -> tuple[str, ...]:
            return ()

    with pytest.raises(ValueError, match="hooks no carried state"):
        carried_state(NoState(), 0)
