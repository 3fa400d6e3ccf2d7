"""The adapters share the library's parameters and expose the workbench hook names and shapes."""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import from_transformers
from workbench.errors import UnknownHookError

from .conftest import FAMILIES, tiny, tokens


def test_parameters_are_the_libraries_own_no_copies(family):
    hf = tiny(family)
    model = from_transformers(hf)
    ours = {p.data_ptr() for p in model.parameters()}
    theirs = {p.data_ptr() for p in hf.parameters()}
    assert ours == theirs
    before = sum(p.numel() for p in hf.parameters())
    assert sum(p.numel() for p in model.parameters()) == before


def test_editing_a_library_weight_changes_the_adapter(family):
    hf = tiny(family)
    model = from_transformers(hf)
    ids = tokens(1, 4)
    with torch.no_grad():
        before = model(ids)
        hf.get_output_embeddings().weight.mul_(2.0)
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before, model(ids).detach())


def test_contract_names_exist_at_every_layer(family):
    model = from_transformers(tiny(family))
    names = set(model.hook_dict)
    assert {"hook_embed", "ln_final.hook_normalized", "hook_logits"} <= names
    for layer in range(len(model.blocks)):
        assert {f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_resid_post"} <= names
    for layer in FAMILIES[family].layers_with_state(len(model.blocks)):
        assert f"blocks.{layer}.mixer.hook_{FAMILIES[family].state_hook}" in names


def test_hook_table_shapes_match_the_cache(family):
    model = from_transformers(tiny(family))
    ids = tokens(2, 5)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids)
    rows = model.hook_table(batch=2, pos=5)
    assert [r["name"] for r in rows] == list(model.hook_specs())
    for row in rows:
        if row["name"] in cache:
            assert tuple(cache[row["name"]].shape) == row["shape"], row["name"]
    assert {r["name"] for r in rows if "pos" in r["dims"]} <= set(cache)


def test_unknown_hook_name_raises_with_suggestions(family):
    model = from_transformers(tiny(family))
    with pytest.raises(UnknownHookError):
        model.run_with_hooks(tokens(1, 3), fwd_hooks=[("blocks.0.mixer.hook_nope", lambda x, hook: x)])
    with pytest.raises(UnknownHookError):
        model.run_with_cache(tokens(1, 3), names_filter=["blocks.9.hook_resid_pre"])


def test_pos_slice_is_axis_one(family):
    model = from_transformers(tiny(family))
    ids = tokens(2, 6)
    name = f"blocks.0.mixer.hook_{FAMILIES[family].state_hook}"
    with torch.no_grad():
        _, full = model.run_with_cache(ids, names_filter=name)
        _, last = model.run_with_cache(ids, names_filter=name, pos_slice=-1)
    torch.testing.assert_close(last[name], full[name][:, -1:])


def test_memory_budget_refuses_before_running(family):
    from workbench.errors import MemoryBudgetError

    model = from_transformers(tiny(family))
    with pytest.raises(MemoryBudgetError):
        model.run_with_cache(tokens(1, 6), memory_budget_bytes=64)
