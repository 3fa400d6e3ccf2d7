"""The gated delta rule's implicit attention: o_t = Σ_s A[t, s] v_s + S_{−1}ᵀ R_t with q, k, α, β detached.

Checked by reconstruction of the recorded output (1e-10 in float64), against the per-pair loop of the
unrolled recurrence, and against the autograd Jacobian of the delta rule with the gates held fixed.
"""

from __future__ import annotations

import pytest
import torch

from tests.adapters.conftest import tiny, tokens
from tests.gradient_checks import gradients_at_output_and_quantity
from workbench.adapters import from_transformers
from workbench.analysis.implicit_attention import implicit_attention
from workbench.analysis.implicit_attention.api import record
from workbench.analysis.implicit_attention.delta_rule import (
    Qwen3Next,
    decay_step,
    delta_rule_attention,
    delta_rule_attention_naive,
)
from workbench.analysis.implicit_attention.evaluation import jacobian
from workbench.kernels.delta_rule import chunked_delta_rule


def operands(L: int = 13, d_k: int = 5, d_v: int = 7, seed: int = 0, per_channel: bool = False):
    """Random delta-rule operands [2, 3 heads, L, ...] in float64: unit keys, β in (0, 1), α in (e^−1, 1)
    (one α per head and step, or one per key channel as Kimi's KDA)."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, L)
    q = torch.randn(*shape, d_k, generator=g, dtype=torch.float64)
    k = torch.nn.functional.normalize(torch.randn(*shape, d_k, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(*shape, d_v, generator=g, dtype=torch.float64)
    beta = torch.rand(*shape, generator=g, dtype=torch.float64)
    log_alpha = -torch.rand(*shape, *((d_k,) if per_channel else ()), generator=g, dtype=torch.float64)
    s0 = torch.randn(2, 3, d_k, d_v, generator=g, dtype=torch.float64)
    return q, k, v, beta, log_alpha, s0


def step_by_step(q, k, v, beta, log_alpha, s0):
    """The delta rule one step at a time (the paper's equation, D_t scalar or diagonal): (o, states)."""
    state, outputs, states = s0, [], []
    for t in range(q.shape[2]):
        kept = decay_step(log_alpha[:, :, t], state)
        delta = beta[:, :, t, None] * (v[:, :, t] - (kept * k[:, :, t, :, None]).sum(-2))
        state = kept + k[:, :, t, :, None] * delta[..., None, :]
        outputs.append((state * q[:, :, t, :, None]).sum(-2))
        states.append(state)
    return torch.stack(outputs, 2), torch.stack(states, 2)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, 13, 64])
def test_chunked_kernel_equals_the_step_by_step_rule(chunk, per_channel):
    q, k, v, beta, log_alpha, s0 = operands(per_channel=per_channel)
    o, states = chunked_delta_rule(q, k, v, log_alpha, beta, s0, chunk_size=chunk, return_states=True)
    o_final, final = chunked_delta_rule(q, k, v, log_alpha, beta, s0, chunk_size=chunk)
    want_o, want_states = step_by_step(q, k, v, beta, log_alpha, s0)
    torch.testing.assert_close(o, want_o, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(states, want_states, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(o_final, want_o, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(final, want_states[:, :, -1], atol=1e-12, rtol=1e-12)


def test_strong_per_channel_decay_takes_the_pairwise_form_and_stays_exact():
    """|γ| beyond FACTOR_LIMIT within a chunk: e^{−γ} would overflow, so the scores go block by block (pair
    decays within 16 steps, factors ≤ 1 across blocks); a chunk of 40 has blocks of 16, 16 and 8."""
    from workbench.kernels.delta_rule import FACTOR_LIMIT

    q, k, v, beta, log_alpha, s0 = operands(L=45, per_channel=True)
    log_alpha = log_alpha * 40.0  # α down to e^−40 per step
    assert float(log_alpha[..., :40, :].sum(-2).abs().amax()) > FACTOR_LIMIT[torch.float64]
    o, states = chunked_delta_rule(q, k, v, log_alpha, beta, s0, chunk_size=40, return_states=True)
    want_o, want_states = step_by_step(q, k, v, beta, log_alpha, s0)
    torch.testing.assert_close(o, want_o, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(states, want_states, atol=1e-12, rtol=1e-12)
    maps, readback = delta_rule_attention(q, k, beta, log_alpha, chunk=40)
    torch.testing.assert_close(maps @ v + readback @ s0, o, atol=1e-12, rtol=1e-12)
    naive, _ = delta_rule_attention_naive(q[:1, :1, :20], k[:1, :1, :20], beta[:1, :1, :20], log_alpha[:1, :1, :20])
    torch.testing.assert_close(maps[:1, :1, :20, :20], naive, atol=1e-12, rtol=1e-12)  # a prefix: across a block


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 4, 13, 64])
def test_chunked_map_reconstructs_the_delta_rule_and_equals_the_naive_loop(chunk, per_channel):
    q, k, v, beta, log_alpha, s0 = operands(per_channel=per_channel)
    o, _ = chunked_delta_rule(q, k, v, log_alpha, beta, s0, chunk_size=4)
    maps, readback = delta_rule_attention(q, k, beta, log_alpha, chunk=chunk)
    torch.testing.assert_close(maps @ v + readback @ s0, o, atol=1e-12, rtol=1e-12)
    naive_maps, naive_readback = delta_rule_attention_naive(q, k, beta, log_alpha)
    torch.testing.assert_close(maps, naive_maps, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(readback, naive_readback, atol=1e-12, rtol=1e-12)
    assert torch.all(maps.triu(1) == 0)


def test_a_prefix_map_is_the_top_left_block():
    q, k, _, beta, log_alpha, _ = operands(L=20)
    full, _ = delta_rule_attention(q, k, beta, log_alpha, chunk=6)
    head, _ = delta_rule_attention(q[..., :9, :], k[..., :9, :], beta[..., :9], log_alpha[..., :9], chunk=6)
    torch.testing.assert_close(head, full[..., :9, :9], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("layer", [0, 1])
def test_model_map_reconstructs_the_recorded_output_in_float64(layer):
    """Through `implicit_attention`, with an initial state from an earlier call (its part is the bias)."""
    model = from_transformers(tiny("qwen3_next", torch.float64))
    with torch.no_grad():
        _, state = model(tokens(2, 4, seed=31), return_state=True)
    att = implicit_attention(model, tokens(2, 13, seed=32), layer=layer, initial_state=state)
    assert att.max_error() < 1e-10
    assert att.bias.abs().max() > 1e-6  # the initial state does contribute
    assert tuple(att.maps.shape) == (2, model.sizes["n_v_heads"] * model.sizes["d_v"], 13, 13)


def test_model_map_reconstructs_the_recorded_output_in_float32():
    model = from_transformers(tiny("qwen3_next"))
    att = implicit_attention(model, tokens(1, 16, seed=33), layer=1, aggregate="none")
    assert att.max_error() < 1e-5


def test_model_map_equals_the_jacobian_with_gates_detached():
    model = from_transformers(tiny("qwen3_next", torch.float64))
    ids = tokens(2, 10, seed=34)
    cache = record(model, ids, [0], "exact")
    form = Qwen3Next.form(model, cache, 0, "exact")
    att = implicit_attention(model, ids, layer=0, cache=cache)
    torch.testing.assert_close(jacobian(form), att.maps, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(form.recur(form.value), form.output, atol=1e-12, rtol=1e-12)


def test_per_channel_decay_differs_from_its_mean():
    """A per-channel decay is not a scalar one in disguise: the map moves when α varies across channels."""
    q, k, _, beta, log_alpha, _ = operands(per_channel=True)
    channels, _ = delta_rule_attention(q, k, beta, log_alpha, chunk=4)
    mean, _ = delta_rule_attention(q, k, beta, log_alpha.mean(-1), chunk=4)
    assert (channels - mean).abs().max() > 1e-3


def test_bad_operands_give_clear_errors():
    q, k, _, beta, log_alpha, _ = operands(L=6)
    with pytest.raises(ValueError, match=r"log_alpha \[..., L\] \(one decay per step\) or \[..., L, d_k\]"):
        delta_rule_attention(q, k, beta, log_alpha[..., None].expand(*log_alpha.shape, 4))
    with pytest.raises(ValueError, match=r"log_alpha must be \[B, H, L\] or \[B, H, L, d_k\]"):
        chunked_delta_rule(q, k, q, log_alpha[..., :5], beta, q.new_zeros(2, 3, 5, 5))
    with pytest.raises(ValueError, match="expected q and k"):
        delta_rule_attention(q, k[..., :4], beta, log_alpha)
    with pytest.raises(ValueError, match="chunk must be a positive int, got 0"):
        delta_rule_attention(q, k, beta, log_alpha, chunk=0)


def test_attention_layer_map_reconstructs_z_with_the_kv_cache_as_bias():
    """Layer 2 (full attention): its pattern over this call's keys; keys from an earlier call go to the bias."""
    model = from_transformers(tiny("qwen3_next", torch.float64))
    ids = tokens(2, 11, seed=35)
    with torch.no_grad():
        _, state = model(tokens(2, 3, seed=36), return_state=True)
    cache = record(model, ids, [2], "exact", initial_state=state)
    att = implicit_attention(model, ids, layer=2, cache=cache, initial_state=state)
    assert att.max_error() < 1e-12 and att.bias.abs().max() > 1e-3
    torch.testing.assert_close(jacobian(Qwen3Next.form(model, cache, 2, "exact")), att.maps, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("layer", [1, 2])
def test_output_gradient_is_the_gradient_at_the_forms_output(layer):
    """`output_grad` maps ∂log p/∂hook_out to ∂log p/∂o (delta rule) or ∂log p/∂z (attention), as a
    backward hook on that quantity sees it in the same float64 run."""
    model = from_transformers(tiny("qwen3_next", torch.float64))
    ids = tokens(1, 9, seed=37)
    quantity = "o" if layer == 1 else "z"
    grad_out, grad_at = gradients_at_output_and_quantity(model, ids, layer, quantity)
    cache = record(model, ids, [layer], "exact")
    got = Qwen3Next.output_grad(model, layer, "exact", grad_out, cache)  # [b, d, L]
    torch.testing.assert_close(got, grad_at.flatten(2).transpose(1, 2), atol=1e-13, rtol=1e-10)


@pytest.mark.parametrize("method", ["attr", "rollout", "grad_x_input"])
def test_attribution_runs_across_the_hybrid_stack(method):
    """Rollout and gradient-weighted attribution compose the delta-rule maps with the attention patterns."""
    from workbench.analysis.implicit_attention.attribution import attribute

    model = from_transformers(tiny("qwen3_next", torch.float64))
    scores = attribute(model, tokens(2, 10, seed=38), method=method, query=7)
    assert scores.shape == (2, 10) and torch.isfinite(scores[:, :8]).all()
    assert scores[:, :8].abs().sum() > 0
