"""OLMo-Hybrid: the gated delta rule with β up to 2, post-norm attention with optional RoPE.

The generic adapter tests (logits, library cache, causal edits, generation) run on the tiny config of
conftest.py (RoPE on); these check the NoPE variant, the chunked path and the implicit attention.
"""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import from_transformers
from workbench.analysis.implicit_attention import implicit_attention
from workbench.analysis.implicit_attention.api import record
from workbench.analysis.implicit_attention.evaluation import jacobian
from workbench.analysis.implicit_attention.olmo_hybrid import OlmoHybrid

from .conftest import _olmo_hybrid, tiny, tokens


@pytest.fixture(scope="module")
def model64():
    return from_transformers(tiny("olmo_hybrid", torch.float64))


def test_without_rope_logits_and_cache_match_transformers():
    """The released checkpoints have no RoPE (rope_parameters None): logits and the KV cache still match."""
    torch.manual_seed(0)
    hf = _olmo_hybrid(rope=False).eval()
    assert hf.model.rotary_emb is None
    model = from_transformers(hf)
    ids = tokens(2, 9, seed=61)
    with torch.no_grad():
        logits, state = model(ids, return_state=True)
        out = hf(ids, use_cache=True)
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[2]["k"], out.cache.layers[2].keys, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 4])
def test_chunked_path_equals_the_step_by_step_path_on_every_hook(model64, chunk_size):
    ids = tokens(2, 13, seed=62)
    for layer in (0, 1):
        model64.blocks[layer].mixer.chunk_size = chunk_size
    try:
        with torch.no_grad():
            caches = {p: model64.run_with_cache(ids, path=p)[1] for p in ("reference", "fused")}
    finally:
        for layer in (0, 1):
            model64.blocks[layer].mixer.chunk_size = 64
    assert caches["fused"]["blocks.0.mixer.hook_beta"].max() > 1.0  # β beyond 1: a negative eigenvalue
    for name, value in caches["reference"].items():
        torch.testing.assert_close(caches["fused"][name], value, atol=1e-10, rtol=1e-10, msg=name)


@pytest.mark.parametrize("layer", [1, 2])
def test_implicit_attention_reconstructs_and_equals_the_jacobian(model64, layer):
    ids = tokens(2, 10, seed=63)
    with torch.no_grad():
        _, state = model64(tokens(2, 3, seed=64), return_state=True)
    cache = record(model64, ids, [layer], "exact", initial_state=state)
    att = implicit_attention(model64, ids, layer=layer, cache=cache, initial_state=state)
    assert att.max_error() < 1e-10 and att.bias.abs().max() > 1e-6
    torch.testing.assert_close(jacobian(OlmoHybrid.form(model64, cache, layer, "exact")), att.maps,
                               atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("method", ["rollout", "grad_x_input"])
def test_attribution_runs_across_the_post_norm_stack(model64, method):
    from workbench.analysis.implicit_attention.attribution import attribute

    scores = attribute(model64, tokens(2, 10, seed=65), method=method, query=7)
    assert scores.shape == (2, 10) and torch.isfinite(scores[:, :8]).all() and scores[:, :8].abs().sum() > 0
