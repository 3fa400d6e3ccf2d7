"""`incl_bwd=True` records dL/dX_t for every hooked quantity X, recurrent states, gates and initial
states included, equal on both paths and to autograd through an independent computation (DESIGN: the
hook contract, gradients)."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import MemoryBudgetError
from workbench.models.hooked import GRADIENT_GRAPH_FACTOR
from workbench.models.protocol import carried_state
from workbench.utils import get_act_name

from ..gradient_checks import PATHS, check_every_gradient, oracle_gradient
from .conftest import small_lm


@pytest.mark.parametrize("path", PATHS)
def test_every_hook_gets_a_gradient_under_incl_bwd(family, path):
    model = small_lm(family)
    tokens = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(tokens, incl_bwd=True, return_type="loss", path=path)
    missing = [n for n in model.hook_dict if f"{n}_grad" not in cache]
    assert not missing
    for name in model.hook_dict:
        assert cache[f"{name}_grad"].shape == cache[name].shape, name
    assert cache.metadata["zero_gradients"] == []
    route = "LSTM adjoint recursion" if family == "lstm" else "reference step loop with additive probes"
    for layer in range(model.cfg.n_layers):
        assert cache.metadata["gradients"][layer].startswith(route)


def test_gradients_equal_autograd_through_a_replay_on_both_paths(family, monkeypatch):
    model = small_lm(family)
    tokens = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(2))
    check_every_gradient(model, tokens, monkeypatch)


@pytest.mark.parametrize(("batch", "length"), [(1, 1), (3, 2)])
def test_short_inputs_through_bwd_hooks(family, batch, length, monkeypatch):
    """run_with_hooks(bwd_hooks=...) on logits: batch 1 and one token, and a wider batch of two."""
    model = small_lm(family, seed=3)
    tokens = torch.randint(0, 7, (batch, length), generator=torch.Generator().manual_seed(3))
    check_every_gradient(model, tokens, monkeypatch, return_type="logits")


@pytest.mark.parametrize("family", ["lstm", "s6", "mingru"])
def test_a_state_gradient_is_the_finite_difference_of_a_causal_edit(family):
    """Independent of autograd: adding eps·V to the state at position t (the edit propagates through
    every later step) changes the loss by eps·<dL/dX_t, V> to second order."""
    model = small_lm(family, seed=4)
    tokens = torch.randint(0, 7, (2, 7), generator=torch.Generator().manual_seed(4))
    name = get_act_name(carried_state(model, 0), 0)
    _, cache = model.run_with_cache(tokens, incl_bwd=True, return_type="loss", path="fused")
    direction = torch.randn(cache[name].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for position in (0, 3, 6):
        v = torch.zeros_like(direction)
        v[:, position] = direction[:, position]

        def shifted(eps, v=v):
            def hook(x, hook):
                return x + eps * v

            with torch.no_grad():
                return float(model.run_with_hooks(tokens, fwd_hooks=[(name, hook)], return_type="loss",
                                                  path="fused"))

        eps = 1e-5
        finite = (shifted(eps) - shifted(-eps)) / (2 * eps)
        analytic = float((cache[f"{name}_grad"] * v).sum())
        assert finite == pytest.approx(analytic, rel=1e-6, abs=1e-9), position
    # the gradient at the last position holds only the direct path; earlier ones add the recurrence
    assert cache[f"{name}_grad"][:, 0].abs().sum() > 0


@pytest.mark.parametrize("family", ["lstm", "s6"])
def test_gradients_under_an_editing_hook(family, monkeypatch):
    """With a state edit in place, the gradients are those of the edited run, on both paths, and the
    forward output is the edited one."""
    model = small_lm(family, seed=6)
    tokens = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(6))
    state = get_act_name(carried_state(model, 0), 0)

    def edit(x, hook):  # on a copy: PyTorch forbids in-place edits of a tensor a backward hook wraps
        x = x.clone()
        x[:, 2] = x[:, 2] * 0.5 + 0.3
        return x

    expected_loss = model.run_with_hooks(tokens, fwd_hooks=[(state, edit)], return_type="loss", path="reference")
    for path in PATHS:
        with model.hooks(fwd_hooks=[(state, edit)]):
            loss, cache = model.run_with_cache(tokens, incl_bwd=True, return_type="loss", path=path)
        torch.testing.assert_close(loss, expected_loss, atol=1e-12, rtol=1e-12)
        for name in (state, "blocks.0.mixer.hook_initial_" + carried_state(model, 0), "blocks.0.hook_resid_pre",
                     get_act_name(carried_state(model, 1), 1)):
            shape = tuple(cache[name].shape)
            expected = oracle_gradient(model, tokens, name, shape, monkeypatch, extra_hooks=[(state, edit)])
            torch.testing.assert_close(cache[f"{name}_grad"], expected, atol=1e-10, rtol=1e-10,
                                       msg=f"{path} {name}")


def test_without_incl_bwd_nothing_changes(family):
    model = small_lm(family, seed=7)
    tokens = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(7))
    for path in PATHS:
        logits, cache = model.run_with_cache(tokens, path=path)
        assert not any(k.endswith("_grad") for k in cache)
        assert "gradients" not in cache.metadata
        with_grads, grad_cache = model.run_with_cache(tokens, path=path, incl_bwd=True, return_type="loss")
        torch.testing.assert_close(with_grads, model(tokens, path=path, return_type="loss"),
                                   atol=1e-12, rtol=1e-12)
        for name in model.hook_dict:
            torch.testing.assert_close(grad_cache[name], cache[name], atol=1e-12, rtol=1e-12, msg=name)
        assert all(block.mixer.last_gradient_route is None for block in model.blocks)


def test_gradient_recording_asks_the_budget_for_the_graph_too():
    """incl_bwd=True checks the recorded values, their gradients and the autograd graph of the whole
    forward (GRADIENT_GRAPH_FACTOR x every hook's bytes), besides the logits and the forward's work,
    against the budget before anything runs."""
    model = small_lm("lstm")
    tokens = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(8))
    name = "blocks.0.mixer.hook_c"
    one, every = model.recording_bytes(2, 6, [name]), model.recording_bytes(2, 6, list(model.hook_dict))
    estimate = model.estimate_memory(tokens, names_filter=name, incl_bwd=True, return_type="loss")
    asked = estimate.total
    assert asked >= 2 * one + GRADIENT_GRAPH_FACTOR * (every - model.recording_bytes(2, 0, list(model.hook_dict)))
    with pytest.raises(MemoryBudgetError, match="recorded gradients"):
        model.run_with_cache(tokens, names_filter=name, incl_bwd=True, return_type="loss",
                             memory_budget_bytes=asked - 1)
    _, cache = model.run_with_cache(tokens, names_filter=name, incl_bwd=True, return_type="loss",
                                    memory_budget_bytes=asked)
    assert set(cache) == {name, f"{name}_grad"}
    held = sum(t.numel() * t.element_size() for t in cache.values())
    assert held <= 2 * one
