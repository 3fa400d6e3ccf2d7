"""Assertions that several family test files make in the same words, written once."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workbench.models.language_model import HookedLanguageModel


def caches_on_both_paths_in_float64(hf: nn.Module, model: HookedLanguageModel, ids: Tensor,
                                    library_tolerance: float = 1e-6) -> dict[str, dict[str, Tensor]]:
    """Every hook of the reference and the fused path agrees to 1e-10 in float64, and the logits match the
    library's to `library_tolerance` (the libraries cast norms and some parameters to float32).
    Returns the two caches, by path."""
    with torch.no_grad():
        caches = {path: model.run_with_cache(ids, path=path)[1] for path in ("reference", "fused")}
        error = (model(ids) - hf(ids).logits).abs().max()
    assert error < library_tolerance, error
    for name, value in caches["reference"].items():
        torch.testing.assert_close(caches["fused"][name], value, atol=1e-10, rtol=1e-10, msg=name)
    return caches


def check_pattern_is_causal_and_the_cache_continues_it(model: HookedLanguageModel, ids: Tensor, layer: int,
                                                       split: int) -> dict:
    """Layer `layer`'s attention pattern [batch, pos, heads, key_pos] is causal and sums to 1, and a run
    continued from the state after `split` tokens gives the same logits and pattern rows. Returns the state."""
    with torch.no_grad():
        full, cache = model.run_with_cache(ids)
        pattern = cache[f"blocks.{layer}.mixer.hook_pattern"]
        _, state = model(ids[:, :split], return_state=True)
        rest, rest_cache = model.run_with_cache(ids[:, split:], initial_state=state)
    for t in range(ids.shape[1]):
        assert torch.all(pattern[:, t, :, t + 1:] == 0)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1], dtype=pattern.dtype))
    torch.testing.assert_close(rest, full[:, split:], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(rest_cache[f"blocks.{layer}.mixer.hook_pattern"], pattern[:, split:],
                               atol=1e-10, rtol=1e-10)
    return state
