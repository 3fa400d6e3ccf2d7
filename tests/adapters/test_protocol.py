"""Adapters satisfy the `HookedModel` Protocol, and their mixers' `state_names` give the hooked state."""

from __future__ import annotations

from workbench.adapters import from_transformers
from workbench.models.protocol import HookedModel

from .conftest import FAMILIES, tiny


def test_an_adapter_is_a_hooked_model_with_its_state_hooked(family):
    model = from_transformers(tiny(family))
    assert isinstance(model, HookedModel)
    n = len(model.blocks)
    for layer in range(n):
        names = model.state_quantities(layer)
        if layer in FAMILIES[family].layers_with_state(n):
            assert FAMILIES[family].state_hook in names
        for name in names:
            assert f"blocks.{layer}.mixer.hook_{name}" in model.hook_dict
