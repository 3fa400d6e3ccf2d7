"""Mamba-2 hybrids (Bamba, ...): attention layers with the KV cache as state, implicit attention per layer
and across the stack, the memory budget, on the tiny configs of conftest.py.

The generic adapter tests (logits against the library on both paths, the library's cache, causal edits,
generation against the library's `generate`, gradients, padding) run on the same configs.
"""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import from_transformers
from workbench.analysis.implicit_attention import implicit_attention
from workbench.analysis.implicit_attention.api import record
from workbench.analysis.implicit_attention.evaluation import jacobian
from workbench.analysis.implicit_attention.mamba2_hybrid import Mamba2Hybrid

from ..gradient_checks import gradients_at_output_and_quantity
from .conftest import tiny, tokens

HYBRIDS = ["bamba", "granitemoehybrid", "nemotron_h"]


@pytest.fixture(scope="module", params=HYBRIDS)
def hybrid(request):
    """(family, float64 model) built once per family for this module."""
    return request.param, from_transformers(tiny(request.param, torch.float64))


def attention_layers(model) -> list[int]:
    return [layer for layer, kind in enumerate(model.layer_types) if kind == "attention"]


def test_layer_kinds_follow_the_config(hybrid):
    _, model = hybrid
    assert model.recurrent_layers and attention_layers(model)
    for layer, kind in enumerate(model.layer_types):
        if kind in ("mlp", "moe"):  # NemotronH's position-wise blocks carry nothing
            assert model.blocks[layer].mixer.state_names == ()
    for layer in model.recurrent_layers:
        assert "state" in model.blocks[layer].mixer.state_names
    for layer in attention_layers(model):
        assert model.blocks[layer].mixer.state_names == ("k", "v")


def test_attention_pattern_is_causal_and_normalised_and_the_kv_cache_continues_it(hybrid):
    _, model = hybrid
    layer = attention_layers(model)[0]
    ids = tokens(2, 8, seed=41)
    with torch.no_grad():
        full, cache = model.run_with_cache(ids)
        pattern = cache[f"blocks.{layer}.mixer.hook_pattern"]  # [2, 8, n_attn_heads, 8]
        _, state = model(ids[:, :5], return_state=True)
        rest, rest_cache = model.run_with_cache(ids[:, 5:], initial_state=state)
    for t in range(8):
        assert torch.all(pattern[:, t, :, t + 1:] == 0)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1], dtype=pattern.dtype))
    sz = model.sizes
    assert tuple(state[layer]["k"].shape) == (2, sz["n_kv_heads"], 5, sz["d_attn_head"])
    torch.testing.assert_close(rest, full[:, 5:], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(rest_cache[f"blocks.{layer}.mixer.hook_pattern"], pattern[:, 5:],
                               atol=1e-10, rtol=1e-10)


def test_a_kv_cache_edit_changes_only_what_reads_it(hybrid):
    """Patching the cached values of an attention layer changes the next call's outputs from position 0,
    and nothing in a call that starts from the unedited cache."""
    _, model = hybrid
    layer = attention_layers(model)[0]
    with torch.no_grad():
        _, state = model(tokens(1, 4, seed=42), return_state=True)
        ids = tokens(1, 6, seed=43)
        clean = model(ids, initial_state=state)
        edited_state = [dict(s) for s in state]
        edited_state[layer]["v"] = state[layer]["v"] + 0.5
        edited = {p: model(ids, initial_state=edited_state, path=p) for p in ("reference", "fused")}
    torch.testing.assert_close(edited["fused"], edited["reference"], atol=1e-10, rtol=1e-10)
    assert ((edited["reference"] - clean).abs().amax(dim=(0, 2)) > 0).all()


def test_every_layer_map_reconstructs_its_output_with_the_state_as_bias(hybrid):
    """Mamba-2 layers (exact mode: conv, gate and D folded in) and attention layers (KV cache to the bias),
    from an initial state of an earlier call, in float64; and each equals its Jacobian with gates detached."""
    _, model = hybrid
    with torch.no_grad():
        _, state = model(tokens(2, 3, seed=44), return_state=True)
    ids = tokens(2, 9, seed=45)
    layers = list(range(len(model.blocks)))
    cache = record(model, ids, layers, "exact", initial_state=state)
    for layer in layers:
        att = implicit_attention(model, ids, layer=layer, cache=cache, initial_state=state)
        assert att.max_error() < 1e-10, layer
        if model.layer_types[layer] in ("mamba", "attention"):
            assert att.bias.abs().max() > 1e-6, layer  # the state does contribute
        form = Mamba2Hybrid.form(model, cache, layer, "exact")
        torch.testing.assert_close(jacobian(form), att.maps, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("method", ["rollout", "attr"])
def test_attribution_composes_the_layers_across_the_hybrid_stack(hybrid, method):
    from workbench.analysis.implicit_attention.attribution import attribute

    _, model = hybrid
    scores = attribute(model, tokens(2, 10, seed=46), method=method, query=7)
    assert scores.shape == (2, 10) and torch.isfinite(scores[:, :8]).all()
    assert scores[:, :8].abs().sum() > 0


def test_output_gradient_of_an_attention_layer_is_the_gradient_at_z(hybrid):
    _, model = hybrid
    layer = attention_layers(model)[0]
    ids = tokens(1, 9, seed=47)
    grad_out, grad_at = gradients_at_output_and_quantity(model, ids, layer, "z")
    cache = record(model, ids, [layer], "exact")
    got = Mamba2Hybrid.output_grad(model, layer, "exact", grad_out, cache)  # [b, d, L]
    torch.testing.assert_close(got, grad_at.flatten(2).transpose(1, 2), atol=1e-13, rtol=1e-10)


def test_memory_budget_counts_the_ssm_state_and_the_attention_pattern(hybrid):
    _, model = hybrid
    sz = model.sizes
    batch, pos = 3, 10
    mamba, attention = model.recurrent_layers[0], attention_layers(model)[0]
    state = batch * pos * sz["n_heads"] * sz["d_head"] * sz["d_state"] * 8  # float64
    assert model.recording_bytes(batch, pos, [f"blocks.{mamba}.mixer.hook_state"]) == state
    pattern = batch * pos * sz["n_attn_heads"] * pos * 8
    assert model.recording_bytes(batch, pos, [f"blocks.{attention}.mixer.hook_pattern"]) == pattern
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens(batch, pos, seed=48),
                                        names_filter=lambda n: n.endswith(("hook_state", "hook_pattern")))
    assert cache[f"blocks.{mamba}.mixer.hook_state"].numel() * 8 == state
    assert cache[f"blocks.{attention}.mixer.hook_pattern"].numel() * 8 == pattern


def test_granite_routing_is_the_librarys_and_a_router_edit_reroutes():
    hf = tiny("granitemoehybrid", torch.float64)
    model = from_transformers(hf)
    ids = tokens(2, 7, seed=49)
    with torch.no_grad():
        clean, cache = model.run_with_cache(ids)
        x = cache["blocks.1.ln2.hook_normalized"].reshape(-1, model.sizes["d_model"])
        logits, weights, index = hf.model.layers[1].block_sparse_moe.router(x)  # the library's router
    torch.testing.assert_close(cache["blocks.1.mlp.hook_router_logits"].reshape(logits.shape), logits.double())
    torch.testing.assert_close(cache["blocks.1.mlp.hook_expert_index"].reshape(index.shape), index.double())
    torch.testing.assert_close(cache["blocks.1.mlp.hook_expert_weights"].reshape(weights.shape), weights,
                               atol=1e-6, rtol=1e-6)  # the library routes in float32

    def favour_unchosen_expert(router_logits, hook):
        chosen = cache["blocks.1.mlp.hook_expert_index"][:, 4].long()  # [batch, top_k]
        unchosen = [next(e for e in range(model.sizes["n_experts"]) if e not in row) for row in chosen.tolist()]
        router_logits[torch.arange(2), 4, unchosen] += 100.0
        return router_logits

    with torch.no_grad():
        with model.hooks(fwd_hooks=[("blocks.1.mlp.hook_router_logits", favour_unchosen_expert)]):
            edited, edited_cache = model.run_with_cache(ids)
    assert not torch.equal(edited_cache["blocks.1.mlp.hook_expert_index"][:, 4],
                           cache["blocks.1.mlp.hook_expert_index"][:, 4])
    change = (edited - clean).abs().amax(dim=(0, 2))
    assert torch.all(change[:4] == 0) and change[4] > 0


def test_nemotron_group_limited_routing_is_the_librarys():
    """Sigmoid scores, the correction bias, the best group, then the top 2 experts in it: the same
    experts and weights as the library's router, and only experts of one group chosen per token."""
    hf = tiny("nemotron_h", torch.float64)
    model = from_transformers(hf)
    ids = tokens(2, 9, seed=50)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids)
        x = cache["blocks.2.ln1.hook_normalized"]
        _, weights, index = hf.model.layers[2].mixer.gate(x)  # the library's router, in float32
    ours = cache["blocks.2.mixer.hook_expert_index"].reshape(index.shape).long()
    order, library_order = ours.sort(-1), index.sort(-1)
    torch.testing.assert_close(order.values, library_order.values)
    got = cache["blocks.2.mixer.hook_expert_weights"].reshape(weights.shape).gather(1, order.indices)
    torch.testing.assert_close(got, weights.gather(1, library_order.indices).double(), atol=1e-6, rtol=1e-6)
    per_group = model.sizes["n_experts"] // 2
    groups = ours // per_group  # [tokens, top_k]
    assert torch.all(groups.amin(-1) == groups.amax(-1))


def test_falcon_h1_block_adds_its_parallel_branches_and_continues_from_its_kv_cache():
    """mixer output = hook_mamba_out + hook_attention_out (multipliers included); the attention's hooks
    live under mixer.attention; a second call from the returned state (KV cache and SSM state) continues."""
    model = from_transformers(tiny("falcon_h1", torch.float64))
    ids = tokens(2, 9, seed=51)
    with torch.no_grad():
        full, cache = model.run_with_cache(ids)
        _, state = model(ids[:, :4], return_state=True)
        rest = model(ids[:, 4:], initial_state=state)
    for layer in range(len(model.blocks)):
        name = f"blocks.{layer}"
        torch.testing.assert_close(cache[f"{name}.hook_mixer_out"],
                                   cache[f"{name}.mixer.hook_mamba_out"] + cache[f"{name}.mixer.hook_attention_out"])
        pattern = cache[f"{name}.mixer.attention.hook_pattern"]
        torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1], dtype=pattern.dtype))
        assert tuple(state[layer]["k"].shape) == (2, model.sizes["n_kv_heads"], 4, model.sizes["d_attn_head"])
    torch.testing.assert_close(rest, full[:, 4:], atol=1e-10, rtol=1e-10)


@pytest.fixture(scope="module")
def falcon():
    """The float64 Falcon-H1 model (norm before the gate, every μP multiplier away from 1) and a state to start from."""
    model = from_transformers(tiny("falcon_h1", torch.float64))
    with torch.no_grad():
        _, state = model(tokens(2, 3, seed=52), return_state=True)
    return model, state


@pytest.mark.parametrize("mode", ["exact", "normed", "paper"])
def test_falcon_h1_parallel_map_reconstructs_both_branches_and_sums_into_the_block(falcon, mode):
    """Per channel, Mamba-2 channels then attention channels: Ã v + bias = output to 1e-10 (float64, from a
    KV cache and SSM state of an earlier call), equal to the detached-gate Jacobian; in "normed" mode the
    projection with the μP multipliers sums both branches into the block's output exactly."""
    model, state = falcon
    ids = tokens(2, 9, seed=53)
    layers = list(range(len(model.blocks)))
    cache = record(model, ids, layers, mode, initial_state=state)
    with torch.no_grad():
        _, outs = model.run_with_cache(ids, initial_state=state, names_filter=lambda n: n.endswith("hook_mixer_out"))
    sz = model.sizes
    for layer in layers:
        att = implicit_attention(model, ids, layer=layer, mode=mode, cache=cache, initial_state=state)
        assert att.maps.shape[1] == sz["d_inner"] + sz["n_attn_heads"] * sz["d_attn_head"]
        assert att.max_error() < 1e-10, (mode, layer)
        assert att.bias[:, sz["d_inner"]:].abs().max() > 1e-6  # the KV cache does contribute
        form = Mamba2Hybrid.form(model, cache, layer, mode)
        torch.testing.assert_close(jacobian(form), att.maps, atol=1e-10, rtol=1e-10)
        if mode == "normed":
            summed = (form.projection @ form.output).transpose(1, 2)  # [b, L, d_model]
            torch.testing.assert_close(summed, outs[f"blocks.{layer}.hook_mixer_out"], atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="parallel block"):  # attention channels before Mamba-2 ones
        implicit_attention(model, ids, layer=0, mode=mode, cache=cache, channels=[sz["d_inner"], 0])


def test_falcon_h1_output_gradient_reaches_both_branches(falcon):
    """From the gradient at the Mamba-2 branch's hook_out: ∂/∂normed through out_proj ("normed" mode) and
    ∂/∂z of the attention (the μP multipliers' ratio, through o_proj), as autograd gives them."""
    model, _ = falcon
    layer, ids, store = 1, tokens(1, 9, seed=54), {}
    names = {"out": f"blocks.{layer}.mixer.hook_out", "normed": f"blocks.{layer}.mixer.hook_normed",
             "z": f"blocks.{layer}.mixer.attention.hook_z"}

    def keep(tensor, hook):
        store[hook.name] = tensor
        return tensor

    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, keep) for n in names.values()]):
        logp = torch.log_softmax(model(ids)[:, 8], -1)[:, 3].sum()
        grads = torch.autograd.grad(logp, [store[n] for n in names.values()])
    grad_out, grad_normed, grad_z = grads
    got = Mamba2Hybrid.output_grad(model, layer, "normed", grad_out, record(model, ids, [layer], "normed"))
    d_inner = model.sizes["d_inner"]
    torch.testing.assert_close(got[:, :d_inner], grad_normed.transpose(1, 2), atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(got[:, d_inner:], grad_z.flatten(2).transpose(1, 2), atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("method", ["rollout", "attr"])
def test_falcon_h1_attribution_composes_its_parallel_blocks(falcon, method):
    from workbench.analysis.implicit_attention.attribution import attribute

    model, _ = falcon
    scores = attribute(model, tokens(2, 10, seed=55), method=method, query=7)
    assert scores.shape == (2, 10) and torch.isfinite(scores[:, :8]).all()
    assert scores[:, :8].abs().sum() > 0


def test_falcon_h1_flow_knockout_removes_the_term_from_both_branches(falcon):
    """`removed_output` ("normed" mode) is each branch rerun with v_s zeroed, gates held, summed through the
    projection with the μP multipliers; the widget's channel count covers both branches."""
    from workbench.analysis.implicit_attention import channel_count
    from workbench.analysis.patching.flow import removed_output

    model, _ = falcon
    sz = model.sizes
    assert channel_count(model) == sz["d_inner"] + sz["n_attn_heads"] * sz["d_attn_head"]
    ids = tokens(2, 6, seed=56)
    cache = record(model, ids, [1], "normed")
    form = Mamba2Hybrid.form(model, cache, 1, "normed")
    value = form.value.clone()
    value[:, :, 2] = 0
    changed = form.recur(value)[:, :, 5] - form.output[:, :, 5]  # [b, d]
    assert changed[:, :sz["d_inner"]].abs().max() > 1e-6 and changed[:, sz["d_inner"]:].abs().max() > 1e-6
    torch.testing.assert_close(removed_output(model, 1, cache, 5, [2])[:, 0], changed @ form.projection.T,
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize(("rms_norm", "before_gate"), [(False, True), (True, False)])
def test_falcon_h1_parallel_map_for_the_other_norm_placements(rms_norm, before_gate):
    """No gated norm, or the norm after the gate: logits still the library's, and in "normed" mode each branch
    reconstructs its output and the projection sums them into the block's output (float64, 1e-10)."""
    import copy

    import transformers

    config = copy.deepcopy(tiny("falcon_h1").config)
    config.mamba_rms_norm, config.mamba_norm_before_gate = rms_norm, before_gate
    torch.manual_seed(1)
    hf = transformers.FalconH1ForCausalLM(config).to(torch.float64).eval()
    model = from_transformers(hf)
    ids = tokens(2, 7, seed=57)
    cache = record(model, ids, [0, 1], "normed")
    with torch.no_grad():
        logits, outs = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_mixer_out"))
        torch.testing.assert_close(logits, hf(ids).logits, atol=1e-6, rtol=1e-6)
    for layer in (0, 1):
        att = implicit_attention(model, ids, layer=layer, mode="normed", cache=cache)
        assert att.max_error() < 1e-10, layer
        form = Mamba2Hybrid.form(model, cache, layer, "normed")
        torch.testing.assert_close((form.projection @ form.output).transpose(1, 2),
                                   outs[f"blocks.{layer}.hook_mixer_out"], atol=1e-10, rtol=1e-10)
