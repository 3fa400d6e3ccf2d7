"""Cached states reproduce the library's own cache; state edits are causal and equal on both paths."""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import from_transformers

from .conftest import FAMILIES, tiny, tokens


def add_at(position: int, amount: float):
    def hook(x, hook):
        x[:, position] = x[:, position] + amount
        return x

    return hook


@pytest.mark.parametrize("path", ["reference", "fused"])
def test_final_state_equals_the_library_cache(family, path):
    hf = tiny(family, torch.float64)
    model = from_transformers(hf)
    ids = tokens(2, 9, seed=7)
    with torch.no_grad():
        expected = FAMILIES[family].library_states(hf, ids)
        _, cache = model.run_with_cache(ids, path=path)
        _, states = model(ids, return_state=True, path=path)
    quantity = FAMILIES[family].state_hook
    for layer, library in enumerate(expected):
        for key, value in library.items():
            torch.testing.assert_close(states[layer][key].to(value.dtype), value, atol=1e-6, rtol=1e-6,
                                       msg=f"layer {layer} {key}")
        if layer in FAMILIES[family].layers_with_state(len(expected)):
            hooked = cache[f"blocks.{layer}.mixer.hook_{quantity}"][:, -1]
            torch.testing.assert_close(hooked, states[layer][quantity], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize(("layer", "position"), [(0, 0), (0, 4), (1, 7), (1, 10)])
def test_state_edit_changes_later_positions_only_and_paths_agree(family, layer, position):
    model = from_transformers(tiny(family, torch.float64))
    ids = tokens(2, 12, seed=8)
    name = f"blocks.{layer}.mixer.hook_{FAMILIES[family].state_hook}"
    first = position + FAMILIES[family].state_lag  # first position whose logits read the edited state
    with torch.no_grad():
        clean = model(ids, path="reference")
        edited = {p: model.run_with_hooks(ids, fwd_hooks=[(name, add_at(position, 0.7))], path=p)
                  for p in ("reference", "fused")}
    torch.testing.assert_close(edited["fused"], edited["reference"], atol=1e-10, rtol=1e-10)
    change = (edited["reference"] - clean).abs().amax(dim=(0, 2))  # [pos]
    assert torch.all(change[:first] == 0), "an edit changed an earlier position"
    assert change[first] > 1e-8, "the edit did not change the position that reads it"
    assert torch.all(change[first + 1:] > 0), "the edit was not carried to later positions"


def test_zeroing_a_prefix_of_states_in_every_layer_gives_equal_logits_on_both_paths(family):
    model = from_transformers(tiny(family, torch.float64))
    ids = tokens(1, 8, seed=9)
    quantity = FAMILIES[family].state_hook
    with torch.no_grad():
        recorded = {}
        for path in ("reference", "fused"):
            hooks = [(f"blocks.{l}.mixer.hook_{quantity}", _zero_before(4))
                     for l in FAMILIES[family].layers_with_state(len(model.blocks))]
            with model.hooks(fwd_hooks=hooks):
                recorded[path] = model(ids, path=path)
    torch.testing.assert_close(recorded["fused"], recorded["reference"], atol=1e-10, rtol=1e-10)


def _zero_before(t: int):
    def hook(x, hook):
        x[:, :t] = 0.0
        return x

    return hook


def test_initial_state_is_hooked_and_differentiable(family):
    model = from_transformers(tiny(family, torch.float64))
    ids = tokens(1, 5, seed=10)
    state = [{k: v.clone().requires_grad_(True) for k, v in layer.items()}
             for layer in model.initial_state(1)]
    model(ids, initial_state=state).logsumexp(-1).sum().backward()
    assert any(v.grad is not None and v.grad.abs().sum() > 0 for v in state[0].values())
    seen = []
    names = [n for n in model.hook_dict if n.startswith("blocks.0.mixer.hook_initial_")]
    model.run_with_hooks(ids, fwd_hooks=[(n, lambda x, hook: seen.append(hook.name)) for n in names])
    assert sorted(seen) == sorted(names)


def test_editing_any_mixer_quantity_is_causal_and_equal_on_both_paths(family):
    model = from_transformers(tiny(family, torch.float64))
    ids = tokens(1, 10, seed=12)
    with torch.no_grad():
        clean = model(ids, path="reference")
        for quantity in model.blocks[1].mixer.quantities:
            name = f"blocks.1.mixer.hook_{quantity}"
            outs = [model.run_with_hooks(ids, fwd_hooks=[(name, add_at(6, 0.3))], path=p)
                    for p in ("reference", "fused")]
            torch.testing.assert_close(outs[1], outs[0], atol=1e-10, rtol=1e-10, msg=name)
            change = (outs[0] - clean).abs().amax(dim=(0, 2))
            assert torch.all(change[:6] == 0), name
            assert change[6:].max() > 0, f"editing {name} changed nothing"
