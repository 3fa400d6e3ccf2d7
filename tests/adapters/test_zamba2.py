"""Zamba2: Mamba-2 layers, some preceded by a shared transformer block reused at several depths with per-depth
LoRA adapters and KV caches.

The generic adapter tests run on the tiny config of conftest.py (layer 0 Mamba-2; layers 1-3 hybrid, two shared
blocks in turn, LoRA on, RoPE on); these check what is particular to Zamba2, and the variant without RoPE or
attention adapters (8 heads of odd size 3 on 4 key/value heads, one shared block) against the library.
"""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import from_transformers
from workbench.analysis.implicit_attention.api import implicit_attention, record
from workbench.analysis.implicit_attention.attribution import attribute, layer_maps, output_gradients
from workbench.analysis.implicit_attention.mamba2_hybrid import shared_attention_form

from .conftest import _zamba2, _zamba2_cache_states, tiny, tokens
from .shared_checks import caches_on_both_paths_in_float64

HYBRID_LAYERS = (1, 2, 3)


@pytest.fixture(scope="module")
def zamba2_64():
    hf = tiny("zamba2", torch.float64)
    return hf, from_transformers(hf)


@pytest.fixture(scope="module")
def without_rope():
    """(float32 library model, our model) of the variant without RoPE or attention LoRA."""
    torch.manual_seed(0)
    hf = _zamba2(rope=False).eval()
    return hf, from_transformers(hf)


def test_every_hook_agrees_on_both_paths_in_float64(zamba2_64):
    """The library runs its norms and SSD scan in float32 whatever the dtype, so in float64 it is matched to
    ~1e-7; our two paths keep float64 and agree to 1e-10 on every hook, each shared-attention use included."""
    hf, model = zamba2_64
    caches = caches_on_both_paths_in_float64(hf, model, tokens(2, 13, seed=41))
    for layer in HYBRID_LAYERS:
        assert f"blocks.{layer}.shared_attn.hook_pattern" in caches["fused"]
    assert "blocks.0.shared_attn.hook_pattern" not in caches["fused"]


def test_each_depth_adds_its_own_lora_to_the_tied_projections(zamba2_64):
    hf, model = zamba2_64
    assert model.shared_blocks == {1: 0, 2: 1, 3: 0}
    first, third = model.blocks[1].shared_attn, model.blocks[3].shared_attn
    assert first.hf.q_proj.weight is third.hf.q_proj.weight  # the library ties block 0's uses
    assert first.lora[0][0].weight is not third.lora[0][0].weight  # each depth its own adapter
    ids = tokens(1, 6, seed=42)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids)
        for layer in (1, 3):
            x = cache[f"blocks.{layer}.attn_ln.hook_normalized"]  # [1, 6, d_attn_in]
            attention = hf.model.layers[layer].shared_transformer.self_attn
            adapter = attention.linear_q_adapter_list[model.blocks[layer].depth]
            q = attention.q_proj(x) + adapter(x)
            torch.testing.assert_close(cache[f"blocks.{layer}.shared_attn.hook_q"].flatten(2), q)
            assert (adapter(x).abs().max() > 1e-3)  # the LoRA term matters


def test_the_kv_cache_is_per_depth_and_continues_a_text(zamba2_64):
    _, model = zamba2_64
    ids = tokens(2, 8, seed=43)
    with torch.no_grad():
        full, cache = model.run_with_cache(ids)
        _, state = model(ids[:, :5], return_state=True)
        rest, rest_cache = model.run_with_cache(ids[:, 5:], initial_state=state)
    for layer in HYBRID_LAYERS:
        assert set(state[layer]) == {"conv", "state", "k", "v"}
        assert tuple(state[layer]["k"].shape) == (2, model.sizes["n_kv_heads"], 5, model.sizes["d_attn_head"])
        pattern = cache[f"blocks.{layer}.shared_attn.hook_pattern"]  # [2, 8, n_attn_heads, 8]
        assert all(torch.all(pattern[:, t, :, t + 1:] == 0) for t in range(8))
        torch.testing.assert_close(rest_cache[f"blocks.{layer}.shared_attn.hook_pattern"], pattern[:, 5:],
                                   atol=1e-10, rtol=1e-10)
    assert not torch.equal(state[1]["k"], state[3]["k"])  # same weights, different inputs and LoRA
    torch.testing.assert_close(rest, full[:, 5:], atol=1e-10, rtol=1e-10)
    edited = [dict(s) for s in state]
    edited[3]["v"] = state[3]["v"] + 0.5  # one depth's cached values
    with torch.no_grad():
        _, edited_cache = model.run_with_cache(ids[:, 5:], initial_state=edited)
    torch.testing.assert_close(edited_cache["blocks.2.hook_resid_post"], rest_cache["blocks.2.hook_resid_post"],
                               atol=0, rtol=0)
    assert (edited_cache["blocks.3.hook_resid_post"] - rest_cache["blocks.3.hook_resid_post"]).abs().amax() > 1e-6


@pytest.mark.parametrize("name", ["shared_attn.hook_k", "shared_attn.hook_pattern", "hook_transformer_out"])
def test_an_edit_of_one_depths_shared_block_at_t_changes_nothing_before_t(zamba2_64, name):
    _, model = zamba2_64
    ids, t = tokens(1, 9, seed=44), 5

    def bump(x, hook):
        x = x.clone()
        x[:, t:] = x[:, t:] * 1.5 + 0.1
        return x

    with torch.no_grad():
        clean = model(ids)
        edited = {p: model.run_with_hooks(ids, fwd_hooks=[(f"blocks.1.{name}", bump)], path=p)
                  for p in ("reference", "fused")}
    torch.testing.assert_close(edited["fused"], edited["reference"], atol=1e-10, rtol=1e-10)
    assert torch.equal(edited["fused"][:, :t], clean[:, :t])
    assert (edited["fused"][:, t:] - clean[:, t:]).abs().amax() > 1e-6


def test_memory_budget_counts_each_depths_pattern_kv_cache_and_ssm_state(zamba2_64):
    _, model = zamba2_64
    sz, batch, pos = model.sizes, 3, 10
    state = batch * pos * sz["n_heads"] * sz["d_head"] * sz["d_state"] * 8  # float64
    pattern = batch * pos * sz["n_attn_heads"] * pos * 8
    keys = batch * pos * sz["n_kv_heads"] * sz["d_attn_head"] * 8
    names = [f"blocks.{layer}.{hook}" for layer in HYBRID_LAYERS
             for hook in ("mixer.hook_state", "shared_attn.hook_pattern", "shared_attn.hook_k", "shared_attn.hook_v")]
    assert model.recording_bytes(batch, pos, names) == 3 * (state + pattern + 2 * keys)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens(batch, pos, seed=45), names_filter=names)
    assert sum(cache[name].numel() * 8 for name in names) == 3 * (state + pattern + 2 * keys)


def test_implicit_attention_of_a_hybrid_layer_and_its_shared_attention(zamba2_64):
    """The Mamba-2 map of a hybrid layer and its shared attention's map reconstruct their outputs with the
    state (SSM state, this depth's KV cache) as the bias; the rollout composes both."""
    _, model = zamba2_64
    with torch.no_grad():
        _, state = model(tokens(2, 3, seed=46), return_state=True)
    ids = tokens(2, 9, seed=47)
    cache = record(model, ids, [3], "exact", initial_state=state)
    att = implicit_attention(model, ids, layer=3, cache=cache, initial_state=state)
    assert att.max_error() < 1e-10
    form = shared_attention_form(model, cache, 3)
    own_keys = form.pattern[:, form.head_index, :, -ids.shape[1]:]  # [b, H·P, L, L]: the cached keys are the bias
    reproduced = (own_keys @ form.value[..., None])[..., 0] + form.state_part  # [b, H·P, L]
    torch.testing.assert_close(reproduced, form.output, atol=1e-10, rtol=1e-10)
    assert form.state_part.abs().max() > 1e-6
    assert len(layer_maps(model, ids)) == len(model.blocks) + len(HYBRID_LAYERS)
    for method in ("rollout", "attr"):
        scores = attribute(model, ids, method=method, query=7)
        assert scores.shape == (2, 9) and torch.isfinite(scores[:, :8]).all() and scores[:, :8].abs().sum() > 0


def test_the_shared_attentions_gradient_weighting_is_the_gradient_at_z(zamba2_64):
    """`attr` weighs a depth's shared-attention map by ∂target/∂hook_out through W_o: autograd's ∂target/∂z."""
    _, model = zamba2_64
    ids, layer = tokens(1, 9, seed=50), 3
    names = [f"blocks.{layer}.shared_attn.hook_{q}" for q in ("z", "out")]
    gradients, _, _ = output_gradients(model, ids, 8, ids[:, 0], [layer], [names[1]])
    store = {}

    def keep(tensor, hook):
        store[hook.name] = tensor
        return tensor

    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, keep) for n in names]):
        logp = torch.log_softmax(model(ids)[:, 8].float(), -1)[:, ids[0, 0]].sum()  # as output_gradients
        (grad_z,) = torch.autograd.grad(logp, store[names[0]])
    cache = record(model, ids, [layer], "exact")
    form = shared_attention_form(model, cache, layer)
    got = (gradients[names[1]] @ form.projection).transpose(1, 2)  # [1, H·P, L]
    torch.testing.assert_close(got, grad_z.flatten(2).transpose(1, 2), atol=1e-12, rtol=1e-10)
    weighted = layer_maps(model, ids, gradients=gradients, layers=[layer])  # the shared attention's, the Mamba-2's
    assert len(weighted) == 2 and torch.isfinite(weighted[0]).all() and weighted[0].abs().sum() > 0


def test_without_rope_or_attention_lora_the_library_is_matched(without_rope):
    """Odd head size 3, 2 query heads per key/value head: logits on both paths to 1e-5 (float32), the final
    states equal the library's cache, greedy generation equals the library's."""
    hf, model = without_rope
    assert model.blocks[1].shared_attn.lora is None and model.blocks[1].shared_attn.rotary is None
    ids = tokens(2, 11, seed=48)
    with torch.no_grad():
        expected = hf(ids).logits
        for path in ("reference", "fused"):
            torch.testing.assert_close(model(ids, path=path), expected, atol=1e-5, rtol=1e-5)
        library = _zamba2_cache_states(hf, ids)
        _, states = model(ids, return_state=True)
    for layer, values in enumerate(library):
        for key, value in values.items():
            torch.testing.assert_close(states[layer][key], value, atol=1e-5, rtol=1e-5, msg=f"{layer} {key}")
    hf.generation_config.eos_token_id = None
    prompt = tokens(1, 5, seed=49)
    assert torch.equal(model.generate(prompt, 4, greedy=True), hf.generate(prompt, max_new_tokens=4, do_sample=False))
