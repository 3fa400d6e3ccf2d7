"""Qwen3-Next: the gated delta rule's hooks hold the paper's quantities, on chunked and step-by-step paths.

The generic adapter tests (logits, library cache, causal edits, generation) run on the tiny config of
conftest.py; these check what is particular to the delta rule and the gated attention layers.
"""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import from_transformers
from workbench.kernels.delta_rule import chunked_delta_rule

from .conftest import tiny, tokens
from .shared_checks import check_pattern_is_causal_and_the_cache_continues_it

DELTA_LAYERS = (0, 1)


def with_chunk_size(model, chunk_size: int):
    for layer in DELTA_LAYERS:
        model.blocks[layer].mixer.chunk_size = chunk_size
    return model


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 64])
def test_chunked_path_equals_the_step_by_step_path_on_every_hook(chunk_size):
    """Chunk sizes that divide the length and that do not (13 tokens): every hook agrees to 1e-10."""
    model = with_chunk_size(from_transformers(tiny("qwen3_next", torch.float64)), chunk_size)
    ids = tokens(2, 13, seed=21)
    with torch.no_grad():
        caches = {p: model.run_with_cache(ids, path=p)[1] for p in ("reference", "fused")}
    assert {model.blocks[layer].mixer.last_kernel for layer in DELTA_LAYERS} == {
        f"chunked gated delta rule (chunk {chunk_size})"}
    for name, value in caches["reference"].items():
        torch.testing.assert_close(caches["fused"][name], value, atol=1e-10, rtol=1e-10, msg=name)


@pytest.mark.parametrize("chunk_size", [3, 64])
def test_chunked_path_matches_transformers_in_float32(chunk_size):
    hf = tiny("qwen3_next")
    model = with_chunk_size(from_transformers(hf, path="fused"), chunk_size)
    ids = tokens(2, 11, seed=22)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_recorded_states_follow_the_gated_delta_rule():
    """S_tᵀ = α_t S_{t−1}ᵀ (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ (the paper's orientation) and o_t = S_tᵀ q_t,
    from the recorded hooks alone, with a nonzero initial state."""
    model = from_transformers(tiny("qwen3_next", torch.float64))
    ids = tokens(2, 9, seed=23)
    with torch.no_grad():
        _, state = model(tokens(2, 5, seed=24), return_state=True)
        _, cache = model.run_with_cache(ids, initial_state=state, path="fused")
    for layer in DELTA_LAYERS:
        mixer = model.blocks[layer].mixer
        q, k, v, alpha, beta, S, o = (cache[f"blocks.{layer}.mixer.hook_{name}"]
                                      for name in ("q", "k", "v", "alpha", "beta", "state", "o"))
        q, k = mixer.per_value_head(q), mixer.per_value_head(k)  # [b, L, H, d_k]
        previous = state[layer]["state"].transpose(-1, -2)  # [b, H, d_v, d_k], paper orientation
        eye = torch.eye(k.shape[-1], dtype=k.dtype)
        for t in range(ids.shape[1]):
            k_t, b_t, a_t = k[:, t], beta[:, t, :, None, None], alpha[:, t, :, None, None]
            expected = (a_t * previous @ (eye - b_t * k_t[..., :, None] * k_t[..., None, :])
                        + b_t * v[:, t, :, :, None] * k_t[..., None, :])
            torch.testing.assert_close(S[:, t].transpose(-1, -2), expected, atol=1e-12, rtol=1e-12)
            torch.testing.assert_close(o[:, t], (S[:, t] * q[:, t, :, :, None]).sum(-2), atol=1e-12, rtol=1e-12)
            previous = expected


def test_hook_table_and_memory_budget_count_the_matrix_state():
    model = from_transformers(tiny("qwen3_next"))
    sz = model.sizes
    batch, pos = 3, 10
    expected = batch * pos * sz["n_v_heads"] * sz["d_k"] * sz["d_v"] * 4  # float32
    assert model.recording_bytes(batch, pos, ["blocks.0.mixer.hook_state"]) == expected
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens(batch, pos, seed=26), names_filter=lambda n: n.endswith("hook_state"))
    assert tuple(cache["blocks.1.mixer.hook_state"].shape) == (batch, pos, sz["n_v_heads"], sz["d_k"], sz["d_v"])
    assert "blocks.2.mixer.hook_state" not in cache  # layer 2 is full attention


def test_attention_pattern_is_causal_and_normalised_and_the_kv_cache_continues_it():
    model = from_transformers(tiny("qwen3_next", torch.float64))
    ids = tokens(2, 8, seed=27)
    state = check_pattern_is_causal_and_the_cache_continues_it(model, ids, layer=2, split=5)
    assert tuple(state[2]["k"].shape) == (2, model.sizes["n_kv_heads"], 5, model.sizes["d_head"])


def test_an_alpha_edit_at_t_acts_from_t_on_both_paths():
    model = from_transformers(tiny("qwen3_next", torch.float64))
    ids = tokens(1, 12, seed=28)

    def zero_decay(alpha, hook):
        alpha[:, 6] = 0.0  # forget everything before position 6
        return alpha

    with torch.no_grad():
        clean = model(ids, path="reference")
        edited = {p: model.run_with_hooks(ids, fwd_hooks=[("blocks.0.mixer.hook_alpha", zero_decay)], path=p)
                  for p in ("reference", "fused")}
    torch.testing.assert_close(edited["fused"], edited["reference"], atol=1e-10, rtol=1e-10)
    change = (edited["reference"] - clean).abs().amax(dim=(0, 2))
    assert torch.all(change[:6] == 0) and torch.all(change[6:] > 0)


def test_bad_chunk_size_gives_one_clear_error():
    model = with_chunk_size(from_transformers(tiny("qwen3_next")), 0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        model(tokens(1, 4))
    x = torch.zeros(1, 1, 4, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_delta_rule(x, x, x, x[..., 0], x[..., 0], torch.zeros(1, 1, 3, 3), chunk_size=2.5)


def test_mixture_of_experts_routing_is_the_librarys_and_a_router_edit_reroutes():
    hf = tiny("qwen3_next", torch.float64)
    model = from_transformers(hf)
    ids = tokens(2, 7, seed=29)
    with torch.no_grad():
        clean, cache = model.run_with_cache(ids)
        x = cache["blocks.1.ln2.hook_normalized"].reshape(-1, model.sizes["d_model"])
        logits, weights, index = hf.model.layers[1].mlp.gate(x)  # the library's router on the same input
    torch.testing.assert_close(cache["blocks.1.mlp.hook_router_logits"].reshape(logits.shape), logits)
    torch.testing.assert_close(cache["blocks.1.mlp.hook_expert_index"].reshape(index.shape), index.double())
    torch.testing.assert_close(cache["blocks.1.mlp.hook_expert_weights"].reshape(weights.shape), weights)
    assert "blocks.0.mlp.hook_router_logits" not in cache  # layer 0 has a dense MLP

    def favour_unchosen_expert(router_logits, hook):
        chosen = cache["blocks.1.mlp.hook_expert_index"][:, 4].long()  # [batch, top_k]
        unchosen = [next(e for e in range(model.sizes["n_experts"]) if e not in row) for row in chosen.tolist()]
        router_logits[torch.arange(2), 4, unchosen] += 100.0
        return router_logits

    with torch.no_grad():
        with model.hooks(fwd_hooks=[("blocks.1.mlp.hook_router_logits", favour_unchosen_expert)]):
            edited, edited_cache = model.run_with_cache(ids)
    new = edited_cache["blocks.1.mlp.hook_expert_index"][:, 4]
    assert not torch.equal(new, cache["blocks.1.mlp.hook_expert_index"][:, 4])
    change = (edited - clean).abs().amax(dim=(0, 2))
    assert torch.all(change[:4] == 0) and change[4] > 0
