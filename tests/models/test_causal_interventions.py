"""A hook that edits a recurrent state at position t changes every later position, no earlier one,
with equal logits on both paths (DESIGN: interventions are causal on both paths)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.models import MIXER_FAMILIES
from workbench.models.protocol import carried_state
from workbench.utils import get_act_name

from .conftest import small_lm


def add_at(position: int, amount: float):
    def hook(x, hook):
        x[:, position] = x[:, position] + amount
        return x

    return hook


@settings(max_examples=25, deadline=None)
@given(
    family=st.sampled_from(MIXER_FAMILIES),
    length=st.integers(2, 25),
    data=st.data(),
    layer=st.integers(0, 1),
)
def test_state_edit_changes_later_positions_only_and_paths_agree(family, length, data, layer):
    position = data.draw(st.integers(0, length - 1))
    model = small_lm(family)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, length), generator=torch.Generator().manual_seed(length))
    name = get_act_name(carried_state(model, layer), layer)
    clean = model(tokens, path="reference")
    edited = {
        path: model.run_with_hooks(tokens, fwd_hooks=[(name, add_at(position, 0.7))], path=path)
        for path in ("reference", "fused")
    }
    torch.testing.assert_close(edited["fused"], edited["reference"], atol=1e-10, rtol=1e-10)
    change = (edited["reference"] - clean).abs().amax(dim=(0, 2))  # [pos]
    assert torch.all(change[:position] == 0), "an edit changed an earlier position"
    assert change[position] > 1e-6, "the edit did not change its own position"
    if position + 1 < length:
        assert torch.all(change[position + 1:] > 0), "the edit was not carried to later positions"


def test_ablating_a_unit_at_every_position_holds_it_at_zero(family):
    """An edit applied at every position acts at every step (a fixed point, not a one-off patch)."""
    model = small_lm(family)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 12), generator=torch.Generator().manual_seed(5))
    name = get_act_name(carried_state(model), 0)

    def ablate(x, hook):
        x[:, :, 3] = 0.0
        return x

    results = {}
    for path in ("reference", "fused"):
        with model.hooks(fwd_hooks=[(name, ablate)]):
            results[path] = model.run_with_cache(tokens, path=path, names_filter=name)
    torch.testing.assert_close(results["fused"][0], results["reference"][0], atol=1e-10, rtol=1e-10)
    for path in results:
        recorded = results[path][1][name]
        assert torch.all(recorded[:, :, 3] == 0)
    # and a one-step loop with the same edit gives the same numbers
    stepped = []
    state = None
    for t in range(tokens.shape[1]):
        with model.hooks(fwd_hooks=[(name, ablate)]):
            logits, state = model(tokens[:, t:t + 1], initial_state=state, return_state=True,
                                  path="reference")
        stepped.append(logits)
    torch.testing.assert_close(torch.cat(stepped, 1), results["reference"][0], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("quantity_index", [0, -1])
def test_editing_any_recurrent_quantity_is_causal(family, quantity_index):
    model = small_lm(family)
    mixer = model.blocks[1].mixer
    quantity = [q for q in mixer.quantities if q != "out"][quantity_index]
    name = f"blocks.1.mixer.hook_{quantity}"
    tokens = torch.randint(0, model.cfg.d_vocab, (1, 10), generator=torch.Generator().manual_seed(6))
    clean = model(tokens, path="reference")
    outs = [model.run_with_hooks(tokens, fwd_hooks=[(name, add_at(6, 0.3))], path=p)
            for p in ("reference", "fused")]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-10, rtol=1e-10)
    change = (outs[0] - clean).abs().amax(dim=(0, 2))
    assert torch.all(change[:6] == 0) and change[6:].max() > 0


def test_initial_state_is_hooked_and_differentiable(family):
    model = small_lm(family)
    tokens = torch.randint(0, model.cfg.d_vocab, (1, 6), generator=torch.Generator().manual_seed(7))
    state = [
        {k: v.clone().requires_grad_(True) for k, v in layer.items()}
        for layer in model.initial_state(1)
    ]
    loss = model(tokens, initial_state=state, path="fused").logsumexp(-1).sum()
    loss.backward()
    assert any(v.grad is not None and v.grad.abs().sum() > 0 for v in state[0].values())
    seen = {}
    name = f"blocks.0.mixer.hook_initial_{model.blocks[0].mixer.state_names[-1]}"

    def look(x, hook):
        seen["shape"] = x.shape

    model.run_with_hooks(tokens, fwd_hooks=[(name, look)])
    assert seen["shape"][0] == 1


def test_state_edit_is_causal_without_gradients(family):
    model = small_lm(family)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 14), generator=torch.Generator().manual_seed(9))
    name = get_act_name(carried_state(model), 0)
    with torch.no_grad():
        clean = model(tokens, path="reference")
        outs = [model.run_with_hooks(tokens, fwd_hooks=[(name, add_at(5, 0.5))], path=p)
                for p in ("reference", "fused")]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-10, rtol=1e-10)
    change = (outs[0] - clean).abs().amax(dim=(0, 2))
    assert torch.all(change[:5] == 0) and torch.all(change[5:] > 0)


def test_cache_beside_an_edit_records_each_edit_once(family):
    """A recorder after an editing hook holds the values the model used: c_t + v, not c_t + 2v."""
    model = small_lm(family)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(11))
    name = get_act_name(carried_state(model), 0)
    for path in ("reference", "fused"):
        _, clean = model.run_with_cache(tokens, names_filter=name, path=path)
        with model.hooks(fwd_hooks=[(name, add_at(4, 0.25))]):
            _, edited = model.run_with_cache(tokens, names_filter=name, path=path)
        difference = edited[name] - clean[name]
        assert torch.all(difference[:, :4] == 0)
        torch.testing.assert_close(difference[:, 4], torch.full_like(difference[:, 4], 0.25))
        # and the recorded states are the ones a one-step loop with the same edit produces
        state, stepped = None, []
        for t in range(tokens.shape[1]):
            def edit_now(x, hook, t=t):
                return x + 0.25 if t == 4 else x

            with model.hooks(fwd_hooks=[(name, edit_now)]):
                _, step_cache = model.run_with_cache(tokens[:, t:t + 1], names_filter=name,
                                                     initial_state=state, path="reference")
                _, state = model(tokens[:, t:t + 1], initial_state=state, return_state=True,
                                 path="reference")
            stepped.append(step_cache[name])
        torch.testing.assert_close(edited[name], torch.cat(stepped, 1), atol=1e-10, rtol=1e-10)
