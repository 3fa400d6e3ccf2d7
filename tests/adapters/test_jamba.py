"""Jamba: Mamba-1 layers with Jamba's Δ/B/C norms, attention with the KV cache as state, routed experts.

The generic adapter tests (logits, library cache, causal edits, generation) run on the tiny config of
conftest.py; these check what is particular to Jamba.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench.adapters import from_transformers
from workbench.analysis.implicit_attention.api import implicit_attention
from workbench.analysis.implicit_attention.attribution import attribute

from .conftest import tiny, tokens
from .shared_checks import caches_on_both_paths_in_float64

MAMBA_LAYERS, ATTENTION_LAYER, MOE_LAYER = (0, 1), 2, 1


@pytest.fixture(scope="module")
def jamba64():
    hf = tiny("jamba", torch.float64)
    return hf, from_transformers(hf)


def test_every_hook_agrees_on_both_paths_in_float64(jamba64):
    """The library casts its norms, A, D and the Δ bias to float32, so in float64 it is matched to ~1e-8
    (conftest); our two paths keep float64 and agree to 1e-10 on every hook."""
    hf, model = jamba64
    ids = tokens(2, 13, seed=31)
    caches_on_both_paths_in_float64(hf, model, ids)


def test_delta_B_C_hooks_hold_jambas_normalised_values():
    hf = tiny("jamba")
    model = from_transformers(hf)
    ids = tokens(2, 7, seed=32)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids)
        for layer in MAMBA_LAYERS:
            mixer = hf.model.layers[layer].mamba
            u = cache[f"blocks.{layer}.mixer.hook_conv"]  # [b, L, d_inner]
            dt, B, C = mixer.x_proj(u).split([mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size], -1)
            hook = f"blocks.{layer}.mixer.hook_"
            torch.testing.assert_close(cache[hook + "B"], mixer.b_layernorm(B))
            torch.testing.assert_close(cache[hook + "C"], mixer.c_layernorm(C))
            torch.testing.assert_close(cache[hook + "delta"], F.softplus(mixer.dt_proj(mixer.dt_layernorm(dt))))


def test_attention_pattern_is_causal_and_normalised_and_the_kv_cache_continues_it(jamba64):
    _, model = jamba64
    ids = tokens(2, 8, seed=33)
    name = f"blocks.{ATTENTION_LAYER}.mixer.hook_pattern"
    with torch.no_grad():
        full, cache = model.run_with_cache(ids)
        _, state = model(ids[:, :5], return_state=True)
        rest, rest_cache = model.run_with_cache(ids[:, 5:], initial_state=state)
    pattern = cache[name]  # [2, 8, n_heads, 8]
    for t in range(8):
        assert torch.all(pattern[:, t, :, t + 1:] == 0)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1], dtype=pattern.dtype))
    assert tuple(state[ATTENTION_LAYER]["k"].shape) == (2, model.sizes["n_kv_heads"], 5, model.sizes["d_head"])
    torch.testing.assert_close(rest, full[:, 5:], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(rest_cache[name], pattern[:, 5:], atol=1e-10, rtol=1e-10)


def test_routing_is_the_librarys_and_a_router_edit_reroutes(jamba64):
    hf, model = jamba64
    ids = tokens(2, 7, seed=34)
    hook = f"blocks.{MOE_LAYER}.mlp.hook_"
    with torch.no_grad():
        clean, cache = model.run_with_cache(ids)
        x = cache[f"blocks.{MOE_LAYER}.ln2.hook_normalized"].reshape(-1, model.sizes["d_model"])
        logits, weights, index = hf.model.layers[MOE_LAYER].feed_forward.router(x)  # the library's router
    torch.testing.assert_close(cache[hook + "router_logits"].reshape(logits.shape), logits)
    torch.testing.assert_close(cache[hook + "expert_index"].reshape(index.shape), index.double())
    torch.testing.assert_close(cache[hook + "expert_weights"].reshape(weights.shape), weights, atol=1e-7, rtol=1e-6)
    assert "blocks.0.mlp.hook_router_logits" not in cache  # layer 0 has a dense MLP

    def favour_unchosen_expert(router_logits, hook):
        chosen = cache[hook.name.replace("router_logits", "expert_index")][:, 4].long()  # [batch, top_k]
        unchosen = [next(e for e in range(model.sizes["n_experts"]) if e not in row) for row in chosen.tolist()]
        router_logits[torch.arange(2), 4, unchosen] += 100.0
        return router_logits

    with torch.no_grad():
        edited, edited_cache = _run_with(model, ids, hook + "router_logits", favour_unchosen_expert)
    assert not torch.equal(edited_cache[hook + "expert_index"][:, 4], cache[hook + "expert_index"][:, 4])
    change = (edited - clean).abs().amax(dim=(0, 2))
    assert torch.all(change[:4] == 0) and change[4] > 0


def _run_with(model, ids, name, fn):
    with model.hooks(fwd_hooks=[(name, fn)]):
        return model.run_with_cache(ids)


def test_implicit_attention_reproduces_every_layer_and_rolls_out_over_the_stack(jamba64):
    """Mamba layers: the S6 form (exact and paper) reconstructs the layer; the attention layer: its own
    pattern reconstructs z. The stack-wide rollout is a causal distribution over positions."""
    _, model = jamba64
    ids = tokens(1, 9, seed=35)
    with torch.no_grad():
        _, state = model(tokens(1, 4, seed=36), return_state=True)
    for layer in range(3):
        for mode in ("exact", "paper"):
            att = implicit_attention(model, ids, layer=layer, mode=mode, initial_state=state)
            assert att.max_error() < 1e-12, (layer, mode)
            channels = model.sizes["d_inner"] if layer in MAMBA_LAYERS else model.sizes["n_heads"] * model.sizes[
                "d_head"]
            assert tuple(att.maps.shape) == (1, channels, 9, 9)
    scores = attribute(model, ids, method="rollout", query=6)  # [1, 9]
    assert torch.all(scores[:, 7:] == 0) and torch.all(scores[:, :7] > 0)
    torch.testing.assert_close(scores.sum(-1), torch.ones(1))
