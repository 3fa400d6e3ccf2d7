"""Edits in linear time: declarative `Edit`s and `position_wise` hooks give the numbers of the general
causal replay (a Python hook on the whole tensor), on both paths, native families and an adapter."""

from __future__ import annotations

import pytest
import torch

from workbench.models import Edit, EditError, position_wise
from workbench.models.protocol import carried_state
from workbench.utils import get_act_name

from .conftest import small_lm

FAMILIES = ("lstm", "gru", "mingru", "s6")
PATHS = ("fused", "reference")
LENGTH = 13


def as_hook(edit: Edit, length: int):
    """The same edit as an unmarked Python hook (general causal replay)."""
    resolved = edit.resolved(length)

    def hook(x, hook):
        return resolved.call_at(x, hook, range(x.shape[1]))

    return hook


def tokens_for(model, batch: int = 3, length: int = LENGTH, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, model.cfg.d_vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def gate_name(model, layer: int) -> str:
    first = model.blocks[layer].mixer.quantities[0]
    return f"blocks.{layer}.mixer.hook_{first}"


def edits_for(model, family: str) -> list[Edit]:
    """Several edits at several layers, positions, quantities and ops."""
    state0, state1 = (get_act_name(carried_state(model, layer), layer) for layer in (0, 1))
    return [
        Edit(state0, 4, "add", 0.3),
        Edit(state1, [2, 9], "scale", 0.5),
        Edit(gate_name(model, 0), 7, "set", 0.25),
        Edit(f"blocks.1.mixer.hook_{'h' if family != 's6' else 'y'}", slice(10, None), "zero"),
    ]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_declarative_edits_equal_the_general_replay(family, path):
    model = small_lm(family)
    tokens = tokens_for(model)
    edits = edits_for(model, family)
    replayed = model.run_with_hooks(tokens, fwd_hooks=[(e.hook, as_hook(e, LENGTH)) for e in edits], path=path)
    edited = model.run_with_edits(tokens, edits=edits, path=path)
    same = model.run_with_hooks(tokens, edits=edits, path=path)
    torch.testing.assert_close(edited, replayed, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(same, edited, atol=0, rtol=0)
    assert not torch.equal(edited, model(tokens, path=path))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_position_wise_hooks_equal_unmarked_hooks(family, path):
    model = small_lm(family)
    tokens = tokens_for(model)
    state = get_act_name(carried_state(model, 0), 0)

    def at_five(x, hook, pos):  # one position
        if 5 in pos:
            x = x.clone()
            x[:, 5 - pos.start] += 0.4
        return x

    def everywhere(x, hook, pos):  # every position: the windows shrink to single steps
        return x * 0.9

    def sparse(x, hook, pos):  # every third position
        x = x.clone()
        for p in pos:
            if p % 3 == 0:
                x[:, p - pos.start] = -x[:, p - pos.start]
        return x

    for fn in (at_five, everywhere, sparse):
        for name in (state, gate_name(model, 1)):
            unmarked = model.run_with_hooks(
                tokens, fwd_hooks=[(name, lambda x, hook, fn=fn: fn(x, hook, range(x.shape[1])))], path=path)
            marked = model.run_with_hooks(tokens, fwd_hooks=[(name, position_wise(fn))], path=path)
            torch.testing.assert_close(marked, unmarked, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_cache_holds_the_edited_values(family, path):
    model = small_lm(family)
    tokens = tokens_for(model)
    edits = edits_for(model, family)
    names = [e.hook for e in edits]
    hooks = [(e.hook, as_hook(e, LENGTH)) for e in edits]
    with model.hooks(fwd_hooks=hooks):
        _, replayed = model.run_with_cache(tokens, names_filter=names, path=path)
    with model.hooks(fwd_hooks=[(e.hook, e.resolved(LENGTH)) for e in edits]):
        _, edited = model.run_with_cache(tokens, names_filter=names, path=path)
    for name in names:
        torch.testing.assert_close(edited[name], replayed[name], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_of_different_edits_equals_separate_runs(family, path):
    model = small_lm(family)
    tokens = tokens_for(model, batch=3)
    state = get_act_name(carried_state(model, 0), 0)
    _, cache = model.run_with_cache(tokens, names_filter=[state])
    features = cache[state].shape[2:]  # e.g. [d_hidden], or [d_inner, d_state] for S6
    value = torch.linspace(-1, 1, features.numel(), dtype=torch.float64).reshape(features)
    per_row = [Edit(state, 3, "set", value, batch=0), Edit(state, 8, "add", 0.5, batch=1),
                Edit(gate_name(model, 1), 0, "zero", batch=2)]
    together = model.run_with_edits(tokens, edits=per_row, path=path)
    for row, edit in enumerate(per_row):
        alone = Edit(edit.hook, edit.positions, edit.op, edit.value)
        separate = model.run_with_edits(tokens[row:row + 1], edits=[alone], path=path)
        torch.testing.assert_close(together[row:row + 1], separate, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", ("lstm", "mingru", "s6"))
@pytest.mark.parametrize("position", (0, LENGTH - 1, -1))
def test_edits_at_the_first_and_last_position(family, path, position):
    model = small_lm(family)
    tokens = tokens_for(model)
    state = get_act_name(carried_state(model, 1), 1)
    edit = Edit(state, position, "add", 1.0)
    clean = model(tokens, path=path)
    edited = model.run_with_edits(tokens, edits=[edit], path=path)
    replayed = model.run_with_hooks(tokens, fwd_hooks=[(state, as_hook(edit, LENGTH))], path=path)
    torch.testing.assert_close(edited, replayed, atol=1e-10, rtol=1e-10)
    last = position % LENGTH
    torch.testing.assert_close(edited[:, :last], clean[:, :last], atol=1e-12, rtol=1e-12)  # kernel on a prefix
    assert not torch.allclose(edited[:, last], clean[:, last])


def test_mean_and_float32_fused_edits_agree_with_the_replay():
    model = small_lm("lstm", dtype=torch.float32)
    tokens = tokens_for(model)
    edits = [Edit("blocks.0.mixer.hook_c", 6, "mean"), Edit("blocks.1.mixer.hook_f", [1, 2, 3], "scale", 0.0)]
    replayed = model.run_with_hooks(tokens, fwd_hooks=[(e.hook, as_hook(e, LENGTH)) for e in edits])
    torch.testing.assert_close(model.run_with_edits(tokens, edits=edits), replayed, atol=1e-5, rtol=1e-5)


def test_bad_edits_raise_value_errors():
    model = small_lm("lstm")
    tokens = tokens_for(model)
    cases = {
        "blocks.0.mixer.hook_cc": Edit("blocks.0.mixer.hook_cc", 1, "zero"),
        "out of range": Edit("blocks.0.mixer.hook_c", LENGTH, "zero"),
        "out of range for a batch": Edit("blocks.0.mixer.hook_c", 1, "zero", batch=5),
        "does not broadcast": Edit("blocks.0.mixer.hook_c", 1, "set", torch.zeros(4)),
        "no position axis": Edit("blocks.0.mixer.hook_initial_c", 0, "zero"),
        "names a position twice": Edit("blocks.0.mixer.hook_c", [1, -12], "zero"),
    }
    for message, edit in cases.items():
        with pytest.raises(ValueError, match=message):
            model.run_with_edits(tokens, edits=[edit])
    with pytest.raises(ValueError, match="needs a value"):
        Edit("blocks.0.mixer.hook_c", 1, "set")
    with pytest.raises(EditError, match="not one of"):
        Edit("blocks.0.mixer.hook_c", 1, "swap", 1.0)


def test_adapter_mamba_edits_equal_the_general_replay():
    pytest.importorskip("transformers")
    from workbench.adapters import from_transformers

    from ..adapters.conftest import tiny, tokens

    model = from_transformers(tiny("mamba", dtype=torch.float64))
    ids = tokens(2, LENGTH)
    edits = [Edit("blocks.0.mixer.hook_state", 5, "add", 0.2), Edit("blocks.1.mixer.hook_y", 8, "zero", batch=1),
             Edit("blocks.1.mixer.hook_delta", [3, 4], "scale", 2.0)]

    def at_five(x, hook, pos):
        if 5 in pos:
            x = x.clone()
            x[:, 5 - pos.start] *= 0.5
        return x

    for path in PATHS:
        replayed = model.run_with_hooks(ids, fwd_hooks=[(e.hook, as_hook(e, LENGTH)) for e in edits], path=path)
        torch.testing.assert_close(model.run_with_edits(ids, edits=edits, path=path), replayed,
                                   atol=1e-10, rtol=1e-10)
        unmarked = model.run_with_hooks(
            ids, fwd_hooks=[("blocks.0.mixer.hook_state", lambda x, hook: at_five(x, hook, range(x.shape[1])))],
            path=path)
        marked = model.run_with_hooks(ids, fwd_hooks=[("blocks.0.mixer.hook_state", position_wise(at_five))],
                                      path=path)
        torch.testing.assert_close(marked, unmarked, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("family", ("lstm", "s6"))
def test_edits_in_run_with_cache_and_under_gradients(family):
    model = small_lm(family)
    tokens = tokens_for(model)
    edits = edits_for(model, family)
    names = [e.hook for e in edits]
    hooks = [(e.hook, as_hook(e, LENGTH)) for e in edits]
    with model.hooks(fwd_hooks=hooks):
        logits, replayed = model.run_with_cache(tokens, names_filter=names, incl_bwd=True, return_type="loss")
    edited_logits, edited = model.run_with_cache(tokens, names_filter=names, incl_bwd=True, return_type="loss",
                                                   edits=edits)
    torch.testing.assert_close(edited_logits, logits, atol=1e-10, rtol=1e-10)
    for name in replayed:
        torch.testing.assert_close(edited[name], replayed[name], atol=1e-10, rtol=1e-10)
    assert any(name.endswith("_grad") for name in edited)


@pytest.mark.parametrize("family", ("elman", "lstm", "gru", "mingru", "minlstm", "s6"))
def test_without_autograd_the_fast_kernels_give_the_same_edits(family):
    """No grad: the compiled CPU kernels run the segments (and minGRU/minLSTM's gates + scan pass)."""
    model = small_lm(family)
    tokens = tokens_for(model)
    edits = edits_for(model, family)
    state = edits[0]
    with torch.no_grad():
        replayed = model.run_with_hooks(tokens, fwd_hooks=[(e.hook, as_hook(e, LENGTH)) for e in edits])
        torch.testing.assert_close(model.run_with_edits(tokens, edits=edits), replayed, atol=1e-12, rtol=1e-12)
        replayed = model.run_with_hooks(tokens, fwd_hooks=[(state.hook, as_hook(state, LENGTH))])
        torch.testing.assert_close(model.run_with_edits(tokens, edits=[state]), replayed, atol=1e-12, rtol=1e-12)
        marked = model.run_with_hooks(tokens, fwd_hooks=[(state.hook, position_wise(lambda x, hook, pos: x * 0.9))])
        unmarked = model.run_with_hooks(tokens, fwd_hooks=[(state.hook, lambda x, hook: x * 0.9)])
        torch.testing.assert_close(marked, unmarked, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("adapter", ("mamba", "mamba2", "rwkv", "recurrent_gemma", "xlstm", "qwen3_next",
                                     "kimi_linear", "olmo_hybrid", "bamba", "granitemoehybrid", "nemotron_h",
                                     "falcon_h1", "jamba", "zamba", "zamba2", "lfm2"))
def test_adapter_state_edits_equal_the_general_replay(adapter):
    """Every adapter's segment pass (its fused kernel on a position range from a given state)."""
    pytest.importorskip("transformers")
    from workbench.adapters import from_transformers

    from ..adapters.conftest import FAMILIES as ADAPTERS
    from ..adapters.conftest import tiny, tokens

    spec = ADAPTERS[adapter]
    model = from_transformers(tiny(adapter, dtype=torch.float64))
    layer = spec.layers_with_state(len(model.blocks))[0]
    name = f"blocks.{layer}.mixer.hook_{spec.state_hook}"
    ids = tokens(2, LENGTH)
    edits = [Edit(name, [0, 6], "scale", 0.5), Edit(name, 9, "add", 0.1, batch=1)]
    for path in PATHS:
        replayed = model.run_with_hooks(ids, fwd_hooks=[(e.hook, as_hook(e, LENGTH)) for e in edits], path=path)
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                edited = model.run_with_edits(ids, edits=edits, path=path)
            torch.testing.assert_close(edited, replayed, atol=1e-10, rtol=1e-10)
        unmarked = model.run_with_hooks(ids, fwd_hooks=[(name, lambda x, hook: x * 0.9)], path=path)
        marked = model.run_with_hooks(ids, fwd_hooks=[(name, position_wise(lambda x, hook, pos: x * 0.9))],
                                      path=path)
        torch.testing.assert_close(marked, unmarked, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("path", PATHS)
def test_per_position_values_and_mixing_with_unmarked_hooks(path):
    model = small_lm("lstm")
    tokens = tokens_for(model)
    values = torch.randn(2, 2, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))  # [rows, pos, H]
    edits = [Edit("blocks.0.mixer.hook_c", [9, 2], "set", values, batch=[0, 2]),
             Edit("blocks.1.mixer.hook_i", 5, "mean", 0.5)]
    replayed = model.run_with_hooks(tokens, fwd_hooks=[(e.hook, as_hook(e, LENGTH)) for e in edits], path=path)
    torch.testing.assert_close(model.run_with_edits(tokens, edits=edits, path=path), replayed,
                               atol=1e-10, rtol=1e-10)
    _, cache = model.run_with_cache(tokens, edits=edits, names_filter=["blocks.0.mixer.hook_c"], path=path)
    torch.testing.assert_close(cache["blocks.0.mixer.hook_c"][[0, 2]][:, [9, 2]], values)  # in the order given

    def unmarked(x, hook):  # an ordinary editing hook on the same layer: that mixer replays generally
        return x * 1.1

    mixed = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mixer.hook_h", unmarked)], edits=edits, path=path)
    plain = model.run_with_hooks(
        tokens, fwd_hooks=[("blocks.0.mixer.hook_h", unmarked), *((e.hook, as_hook(e, LENGTH)) for e in edits)],
        path=path)
    torch.testing.assert_close(mixed, plain, atol=1e-10, rtol=1e-10)
