"""LFM2: gated short convolutions (a shift-register state over L − 1 inputs) and attention with RoPE.

The generic adapter tests (logits, library cache, causal edits, generation) run on the tiny config of
conftest.py (layers 0, 1 short conv; 2 attention); these check what is particular to LFM2.
"""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import from_transformers
from workbench.analysis.implicit_attention.api import implicit_attention, layer_forms
from workbench.analysis.implicit_attention.attribution import attribute
from workbench.analysis.implicit_attention.evaluation import jacobian

from .conftest import tiny, tokens
from .shared_checks import caches_on_both_paths_in_float64

CONV_LAYERS, ATTENTION_LAYER = (0, 1), 2


@pytest.fixture(scope="module")
def lfm2_64():
    hf = tiny("lfm2", torch.float64)
    return hf, from_transformers(hf)


def test_every_hook_agrees_on_both_paths_in_float64(lfm2_64):
    """The library casts its RMSNorms to float32, so in float64 it is matched to ~1e-7; our two paths keep
    float64 and agree to 1e-10 on every hook."""
    hf, model = lfm2_64
    ids = tokens(2, 13, seed=51)
    caches_on_both_paths_in_float64(hf, model, ids)


def test_gates_window_state_and_conv_follow_the_short_convolution(lfm2_64):
    """B, C, x are the library's in_proj thirds; S_t holds v_{t−L+2..t} (the initial window first); c_t =
    w · [S_{t−1}, v_t] + b and y_t = C_t ⊙ c_t, from the recorded hooks alone, from a nonzero state."""
    hf, model = lfm2_64
    ids = tokens(2, 7, seed=52)
    with torch.no_grad():
        _, state = model(tokens(2, 4, seed=53), return_state=True)
        _, cache = model.run_with_cache(ids, initial_state=state, path="fused")
    for layer in CONV_LAYERS:
        hook = f"blocks.{layer}.mixer.hook_"
        short = hf.model.layers[layer].conv  # Lfm2ShortConv; its depthwise Conv1d is short.conv
        conv = short.conv
        B, C, x = short.in_proj(cache[f"blocks.{layer}.ln1.hook_normalized"]).chunk(3, dim=-1)
        for name, value in (("B", B), ("C", C), ("x", x)):
            torch.testing.assert_close(cache[hook + name], value, atol=1e-12, rtol=1e-12)
        v, S = cache[hook + "Bx"], cache[hook + "state"]  # [b, L, d], [b, L, d, k − 1]
        torch.testing.assert_close(v, B * x, atol=1e-12, rtol=1e-12)
        inputs = torch.cat([state[layer]["state"], v.transpose(1, 2)], dim=-1)  # [b, d, k − 1 + L]
        k = conv.weight.shape[-1]
        for t in range(ids.shape[1]):
            torch.testing.assert_close(S[:, t], inputs[..., t + 1:t + k], atol=0, rtol=0)
            previous = state[layer]["state"] if t == 0 else S[:, t - 1]
            window = torch.cat([previous, v[:, t, :, None]], dim=-1)  # [b, d, k]
            expected = (window * conv.weight[:, 0]).sum(-1) + conv.bias
            torch.testing.assert_close(cache[hook + "conv"][:, t], expected, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(cache[hook + "y"], C * cache[hook + "conv"], atol=1e-12, rtol=1e-12)


def test_the_kv_cache_continues_the_rotary_positions(lfm2_64):
    _, model = lfm2_64
    ids = tokens(2, 8, seed=54)
    name = f"blocks.{ATTENTION_LAYER}.mixer.hook_pattern"
    with torch.no_grad():
        full, cache = model.run_with_cache(ids)
        _, state = model(ids[:, :5], return_state=True)
        rest, rest_cache = model.run_with_cache(ids[:, 5:], initial_state=state)
    pattern = cache[name]
    assert all(torch.all(pattern[:, t, :, t + 1:] == 0) for t in range(8))
    torch.testing.assert_close(rest, full[:, 5:], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(rest_cache[name], pattern[:, 5:], atol=1e-10, rtol=1e-10)


def test_the_short_conv_map_is_exact_banded_and_the_jacobian(lfm2_64):
    """α[t, s] = C_t w_{L−1−(t−s)} B_s reconstructs y to 1e-12 with an initial window in the bias, is zero
    off the band 0 ≤ t − s < L, equals ∂y/∂x with the gates held, and its rows and channels are the full
    map's; the attention layer's pattern reconstructs z; the stack rollout is causal."""
    _, model = lfm2_64
    ids = tokens(1, 9, seed=55)
    with torch.no_grad():
        _, state = model(tokens(1, 4, seed=56), return_state=True)
    k = model.sizes["d_conv"]
    t, s = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    for layer in range(3):
        att = implicit_attention(model, ids, layer=layer, initial_state=state)
        assert att.max_error() < 1e-12, layer
        if layer in CONV_LAYERS:
            off_band = (t - s < 0) | (t - s >= k)
            assert torch.all(att.maps[..., off_band] == 0) and torch.all(att.maps[..., ~off_band] != 0)
            rows = implicit_attention(model, ids, layer=layer, initial_state=state, queries=[2, 7], channels=[1, 5])
            torch.testing.assert_close(rows.maps, att.maps[:, [1, 5]][:, :, [2, 7]], atol=0, rtol=0)
    form = layer_forms(model, ids, layers=[0])[0]
    torch.testing.assert_close(jacobian(form), implicit_attention(model, ids, layer=0).maps, atol=1e-12, rtol=1e-12)
    scores = attribute(model, ids, method="rollout", query=6)  # [1, 9]
    assert torch.all(scores[:, 7:] == 0) and torch.all(scores[:, :7] > 0)
