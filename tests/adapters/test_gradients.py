"""`incl_bwd=True` on the `transformers` adapters: every hook gets dL/dX_t, equal on both paths and to
autograd through a forced causal replay (DESIGN: the hook contract, gradients)."""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import from_transformers

from ..gradient_checks import check_every_gradient
from .conftest import tiny, tokens


def test_every_hook_gets_the_gradient_of_the_loss(family, monkeypatch):
    model = from_transformers(tiny(family, torch.float64))
    results = check_every_gradient(model, tokens(2, 6, seed=3), monkeypatch, atol=1e-9)
    for path, (_, cache) in results.items():
        assert all(f"{name}_grad" in cache for name in model.hook_dict), path
        routes = cache.metadata["gradients"]
        assert set(routes) == set(range(len(model.blocks)))


@pytest.mark.parametrize(("batch", "length"), [(1, 1), (3, 2)])
def test_mamba_short_inputs_through_bwd_hooks(batch, length, monkeypatch):
    model = from_transformers(tiny("mamba", torch.float64))
    check_every_gradient(model, tokens(batch, length, seed=4), monkeypatch, return_type="logits", atol=1e-9)


def test_mamba_fused_path_still_names_its_forward_kernel():
    model = from_transformers(tiny("mamba", torch.float64))
    _, cache = model.run_with_cache(tokens(2, 6, seed=5), incl_bwd=True, return_type="loss", path="fused")
    for layer, route in cache.metadata["gradients"].items():
        assert route.startswith("reference step loop with additive probes"), layer
        assert cache.metadata["kernels"][layer] != "reference loop"
