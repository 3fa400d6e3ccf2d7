"""Zamba: multi-head Mamba-1 layers and one shared attention block whose output feeds the Mamba input.

The generic adapter tests (logits, library cache, causal edits, generation) run on the tiny config of
conftest.py (layers 0, 1 Mamba; 2, 3 hybrid); these check what is particular to Zamba.
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

HYBRID_LAYERS = (2, 3)


@pytest.fixture(scope="module")
def zamba64():
    hf = tiny("zamba", torch.float64)
    return hf, from_transformers(hf)


def test_every_hook_agrees_on_both_paths_in_float64(zamba64):
    """The library casts its norms, A, D and the Δ bias to float32, so in float64 it is matched to ~1e-8;
    our two paths keep float64 and agree to 1e-10 on every hook, the shared block's included."""
    hf, model = zamba64
    ids = tokens(2, 13, seed=41)
    caches = caches_on_both_paths_in_float64(hf, model, ids)
    assert "blocks.2.attn.hook_pattern" in caches["fused"] and "blocks.0.attn.hook_pattern" not in caches["fused"]


def test_B_C_and_delta_are_per_mamba_head():
    hf = tiny("zamba")
    model = from_transformers(hf)
    ids = tokens(2, 7, seed=42)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids)
        mixer = hf.model.layers[0].mamba
        u = cache["blocks.0.mixer.hook_conv"].view(2, 7, mixer.n_mamba_heads, -1)  # [b, L, H, head_dim]
        for h in range(mixer.n_mamba_heads):
            dt, B, C = (u[:, :, h] @ mixer.x_proj_weight[h].T).split(
                [mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size], -1)
            torch.testing.assert_close(cache["blocks.0.mixer.hook_B"][:, :, h], B)
            torch.testing.assert_close(cache["blocks.0.mixer.hook_C"][:, :, h], C)
            width = u.shape[-1]
            delta = F.softplus(dt @ mixer.dt_proj_weight[h].T + mixer.dt_proj_bias[h])
            torch.testing.assert_close(cache["blocks.0.mixer.hook_delta"][:, :, h * width:(h + 1) * width], delta)


def test_the_shared_attention_keeps_one_kv_cache_per_hybrid_layer_and_continues_a_text(zamba64):
    _, model = zamba64
    attention = [model.blocks[layer].attn.hf for layer in HYBRID_LAYERS]
    assert attention[0].q_proj.weight is attention[1].q_proj.weight  # the library ties them
    ids = tokens(2, 8, seed=43)
    with torch.no_grad():
        full, cache = model.run_with_cache(ids)
        _, state = model(ids[:, :5], return_state=True)
        rest, rest_cache = model.run_with_cache(ids[:, 5:], initial_state=state)
    for layer in HYBRID_LAYERS:
        assert set(state[layer]) == {"conv", "state", "k", "v"}
        assert tuple(state[layer]["k"].shape) == (2, model.sizes["n_kv_heads"], 5, model.sizes["d_head"])
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [2, 8, n_heads, 8]
        assert all(torch.all(pattern[:, t, :, t + 1:] == 0) for t in range(8))
        torch.testing.assert_close(rest_cache[f"blocks.{layer}.attn.hook_pattern"], pattern[:, 5:],
                                   atol=1e-10, rtol=1e-10)
    assert not torch.equal(state[2]["k"], state[3]["k"])
    torch.testing.assert_close(rest, full[:, 5:], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", ["attn.hook_k", "attn.hook_pattern", "hook_transformer_out"])
def test_an_edit_in_the_shared_block_is_causal_and_equal_on_both_paths(zamba64, name):
    _, model = zamba64
    ids = tokens(1, 10, seed=44)

    def bump(x, hook):
        x[:, 6] = x[:, 6] + 0.3
        return x

    with torch.no_grad():
        clean = model(ids)
        outs = [model.run_with_hooks(ids, fwd_hooks=[(f"blocks.2.{name}", bump)], path=p)
                for p in ("reference", "fused")]
    torch.testing.assert_close(outs[1], outs[0], atol=1e-10, rtol=1e-10)
    change = (outs[0] - clean).abs().amax(dim=(0, 2))
    assert torch.all(change[:6] == 0) and change[6:].max() > 0


def test_implicit_attention_reproduces_every_mamba_layer_and_rolls_out(zamba64):
    _, model = zamba64
    ids = tokens(1, 9, seed=45)
    with torch.no_grad():
        _, state = model(tokens(1, 4, seed=46), return_state=True)
    for layer in range(4):
        for mode in ("exact", "paper"):
            att = implicit_attention(model, ids, layer=layer, mode=mode, initial_state=state)
            assert att.max_error() < 1e-12, (layer, mode)
            assert tuple(att.maps.shape) == (1, model.sizes["d_inner"], 9, 9)
    scores = attribute(model, ids, method="rollout", query=6)  # [1, 9]
    assert torch.all(scores[:, 7:] == 0) and torch.all(scores[:, :7] > 0)


def test_the_rollout_composes_the_shared_attention_before_each_hybrid_layers_mamba(zamba64):
    """A hybrid layer gives two maps, first its shared attention's pattern (exact: z from v with the KV cache of
    an earlier call in the bias, equal to its Jacobian), then its Mamba map; the stack rollout composes all
    six, and the attention maps change it."""
    from workbench.analysis.implicit_attention.api import record
    from workbench.analysis.implicit_attention.attribution import layer_maps, rollout
    from workbench.analysis.implicit_attention.evaluation import jacobian
    from workbench.analysis.implicit_attention.hybrid import MambaHybrid

    _, model = zamba64
    ids = tokens(2, 9, seed=47)
    with torch.no_grad():
        _, state = model(tokens(2, 4, seed=48), return_state=True)
    cache = record(model, ids, range(4), "exact", initial_state=state)
    for layer in range(4):
        stages = MambaHybrid.pre_layer_forms(model, cache, layer)
        assert len(stages) == (1 if layer in HYBRID_LAYERS else 0)
        for shared in stages:
            rebuilt = (shared.core() @ shared.value[..., None])[..., 0] + shared.state_part  # [b, H·P, L]
            torch.testing.assert_close(rebuilt, cache[f"blocks.{layer}.attn.hook_z"].flatten(2).transpose(1, 2),
                                       atol=1e-10, rtol=1e-10)
            assert shared.state_part.abs().max() > 1e-6  # the KV cache does contribute
            torch.testing.assert_close(jacobian(shared), shared.core(), atol=1e-10, rtol=1e-10)
    maps = layer_maps(model, ids)
    assert len(maps) == 6  # layers 0, 1: Mamba; 2, 3: shared attention, then Mamba
    without_attention = [maps[0], maps[1], maps[3], maps[5]]
    assert (rollout(maps) - rollout(without_attention)).abs().max() > 1e-3
    scores = attribute(model, ids, method="rollout", query=6)
    torch.testing.assert_close(scores, rollout(maps)[:, 6].float())


def test_the_gradient_weighting_the_shared_attention_map_is_the_gradient_at_its_z(zamba64):
    """attr weights the shared attention's map by the gradient at `attn.hook_out` through W_o (the form's
    projection): that is autograd's gradient at its z."""
    from workbench.analysis.implicit_attention.api import record
    from workbench.analysis.implicit_attention.attribution import output_gradients
    from workbench.analysis.implicit_attention.hybrid import MambaHybrid

    _, model = zamba64
    layer, ids, store = 2, tokens(1, 9, seed=49), {}

    def keep(tensor, hook):
        store[hook.name] = tensor
        return tensor

    z = f"blocks.{layer}.attn.hook_z"
    with torch.enable_grad(), model.hooks(fwd_hooks=[(z, keep)]):
        logp = torch.log_softmax(model(ids)[:, 8].float(), -1)[:, 3]  # as output_gradients: float32
        (expected,) = torch.autograd.grad(logp.sum(), store[z])
    (hook,) = MambaHybrid.pre_layer_outputs(model, layer)
    assert hook == f"blocks.{layer}.attn.hook_out" and MambaHybrid.pre_layer_outputs(model, 0) == []
    grads, _, _ = output_gradients(model, ids, 8, torch.tensor([3]), range(4), [hook])
    (shared,) = MambaHybrid.pre_layer_forms(model, record(model, ids, [layer], "exact"), layer)
    torch.testing.assert_close((grads[hook] @ shared.projection).transpose(1, 2),
                               expected.flatten(2).transpose(1, 2), atol=1e-12, rtol=1e-9)
    scores = attribute(model, ids, method="attr", query=6)
    assert scores.shape == (1, 9) and torch.isfinite(scores[:, :7]).all() and scores[:, :7].abs().sum() > 0
