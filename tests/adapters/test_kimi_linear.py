"""Kimi-Linear: KDA (the delta rule with a per-channel decay), latent attention and its DeepSeek-V3 router.

The generic adapter tests (logits, library cache, causal edits, generation) run on the tiny config of
conftest.py; these check what is particular to Kimi, and its implicit attention.
"""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import from_transformers
from workbench.analysis.implicit_attention import implicit_attention
from workbench.analysis.implicit_attention.api import record
from workbench.analysis.implicit_attention.evaluation import jacobian
from workbench.analysis.implicit_attention.kimi_linear import KimiLinear

from ..gradient_checks import gradients_at_output_and_quantity
from .conftest import tiny, tokens
from .shared_checks import check_pattern_is_causal_and_the_cache_continues_it

KDA_LAYERS = (0, 1)


@pytest.fixture(scope="module")
def model64():
    return from_transformers(tiny("kimi_linear", torch.float64))


def with_chunk_size(model, chunk_size: int):
    for layer in KDA_LAYERS:
        model.blocks[layer].mixer.chunk_size = chunk_size
    return model


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_chunked_path_equals_the_step_by_step_path_on_every_hook(model64, chunk_size):
    """Chunk sizes that divide the length and that do not (13 tokens), with a cached prefix: every hook
    agrees to 1e-10."""
    model = with_chunk_size(model64, chunk_size)
    ids = tokens(2, 13, seed=41)
    try:
        with torch.no_grad():
            _, state = model(tokens(2, 3, seed=42), return_state=True)
            caches = {p: model.run_with_cache(ids, path=p, initial_state=state)[1] for p in ("reference", "fused")}
    finally:
        with_chunk_size(model, 64)
    for name, value in caches["reference"].items():
        torch.testing.assert_close(caches["fused"][name], value, atol=1e-10, rtol=1e-10, msg=name)


def test_chunked_path_matches_transformers_in_float32_with_an_odd_chunk():
    hf = tiny("kimi_linear")
    model = with_chunk_size(from_transformers(hf, path="fused"), 3)
    ids = tokens(2, 11, seed=43)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_recorded_states_follow_kda_with_a_per_channel_decay(model64):
    """S_t = diag(α_t) S_{t−1} + β_t k_t (v_t − (diag(α_t) S_{t−1})ᵀ k_t)ᵀ and o_t = S_tᵀ q_t from the hooks
    alone, with a nonzero initial state; α really varies across a head's channels."""
    ids = tokens(2, 9, seed=44)
    with torch.no_grad():
        _, state = model64(tokens(2, 5, seed=45), return_state=True)
        _, cache = model64.run_with_cache(ids, initial_state=state, path="fused")
    for layer in KDA_LAYERS:
        q, k, v, alpha, beta, S, o = (cache[f"blocks.{layer}.mixer.hook_{name}"]
                                      for name in ("q", "k", "v", "alpha", "beta", "state", "o"))
        assert alpha.shape == k.shape and (alpha.amax(-1) - alpha.amin(-1)).max() > 1e-2
        previous = state[layer]["state"]  # [b, H, d_k, d_v]
        for t in range(ids.shape[1]):
            kept = alpha[:, t, :, :, None] * previous
            delta = beta[:, t, :, None] * (v[:, t] - (kept * k[:, t, :, :, None]).sum(-2))
            expected = kept + k[:, t, :, :, None] * delta[:, :, None, :]
            torch.testing.assert_close(S[:, t], expected, atol=1e-12, rtol=1e-12)
            torch.testing.assert_close(o[:, t], (S[:, t] * q[:, t, :, :, None]).sum(-2), atol=1e-12, rtol=1e-12)
            previous = expected


def test_latent_attention_is_causal_and_its_latent_cache_continues_it(model64):
    ids = tokens(2, 8, seed=46)
    state = check_pattern_is_causal_and_the_cache_continues_it(model64, ids, layer=2, split=5)
    assert tuple(state[2]["latent"].shape) == (2, 1, 5, model64.sizes["kv_lora_rank"])


def test_routing_is_the_librarys_and_a_router_edit_reroutes():
    hf = tiny("kimi_linear", torch.float64)
    model = from_transformers(hf)
    ids = tokens(2, 7, seed=47)
    with torch.no_grad():
        clean, cache = model.run_with_cache(ids)
        x = cache["blocks.1.ln2.hook_normalized"].reshape(-1, model.sizes["d_model"])
        logits, weights, index = hf.model.layers[1].mlp.gate(x)  # the library's router on the same input
    ours_index = cache["blocks.1.mlp.hook_expert_index"].reshape(index.shape).long()
    ours_weights = cache["blocks.1.mlp.hook_expert_weights"].reshape(weights.shape)
    torch.testing.assert_close(cache["blocks.1.mlp.hook_router_logits"].reshape(logits.shape), logits.double())
    order, ours_order = index.argsort(-1), ours_index.argsort(-1)  # the library's top-k is unsorted
    torch.testing.assert_close(ours_index.gather(1, ours_order), index.gather(1, order))
    torch.testing.assert_close(ours_weights.gather(1, ours_order), weights.gather(1, order).double())
    assert "blocks.0.mlp.hook_router_logits" not in cache  # layer 0 has a dense MLP

    def favour_unchosen_expert(router_logits, hook):
        chosen = cache["blocks.1.mlp.hook_expert_index"][:, 4].long()  # [batch, top_k]
        unchosen = [next(e for e in range(model.sizes["n_experts"]) if e not in row) for row in chosen.tolist()]
        router_logits[torch.arange(2), 4, unchosen] += 100.0
        return router_logits

    with torch.no_grad(), model.hooks(fwd_hooks=[("blocks.1.mlp.hook_router_logits", favour_unchosen_expert)]):
        edited, edited_cache = model.run_with_cache(ids)
    assert not torch.equal(edited_cache["blocks.1.mlp.hook_expert_index"][:, 4],
                           cache["blocks.1.mlp.hook_expert_index"][:, 4])
    change = (edited - clean).abs().amax(dim=(0, 2))
    assert torch.all(change[:4] == 0) and change[4] > 0


@pytest.mark.parametrize("layer", [0, 2])
def test_implicit_attention_reconstructs_each_layer_with_the_state_in_the_bias(model64, layer):
    """KDA layer 0: the per-channel delta-rule map; latent-attention layer 2: its pattern, cached latents'
    values in the bias. Both reconstruct the output to 1e-10 and equal the Jacobian with the gates detached."""
    ids = tokens(2, 11, seed=48)
    with torch.no_grad():
        _, state = model64(tokens(2, 4, seed=49), return_state=True)
    cache = record(model64, ids, [layer], "exact", initial_state=state)
    att = implicit_attention(model64, ids, layer=layer, cache=cache, initial_state=state)
    assert att.max_error() < 1e-10 and att.bias.abs().max() > 1e-6
    form = KimiLinear.form(model64, cache, layer, "exact")
    torch.testing.assert_close(jacobian(form), att.maps, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("layer", [1, 2])
def test_output_gradient_is_the_gradient_at_the_forms_output(model64, layer):
    ids = tokens(1, 9, seed=50)
    quantity = "o" if layer == 1 else "z"
    grad_out, grad_at = gradients_at_output_and_quantity(model64, ids, layer, quantity)
    cache = record(model64, ids, [layer], "exact")
    got = KimiLinear.output_grad(model64, layer, "exact", grad_out, cache)  # [b, d, L]
    torch.testing.assert_close(got, grad_at.flatten(2).transpose(1, 2), atol=1e-13, rtol=1e-10)


def test_rollout_runs_across_the_hybrid_stack(model64):
    from workbench.analysis.implicit_attention.attribution import attribute

    scores = attribute(model64, tokens(2, 10, seed=51), method="rollout", query=7)
    assert scores.shape == (2, 10) and torch.isfinite(scores[:, :8]).all() and scores[:, :8].abs().sum() > 0
