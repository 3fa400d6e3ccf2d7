"""Reference and fused paths record the same numbers for every family (DESIGN: same numbers)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.models import MIXER_FAMILIES

from .conftest import small_lm

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def assert_paths_agree(model, tokens, dtype, **kwargs):
    ref_logits, ref_cache = model.run_with_cache(tokens, path="reference", **kwargs)
    fused_logits, fused_cache = model.run_with_cache(tokens, path="fused", **kwargs)
    tol = TOLERANCE[dtype]
    assert set(ref_cache) == set(fused_cache)
    torch.testing.assert_close(fused_logits, ref_logits, atol=tol, rtol=tol)
    for name in ref_cache:
        torch.testing.assert_close(fused_cache[name], ref_cache[name], atol=tol, rtol=tol,
                                   msg=lambda m, name=name: f"{name}: {m}")


@settings(max_examples=30, deadline=None)
@given(
    family=st.sampled_from(MIXER_FAMILIES),
    batch=st.integers(1, 3),
    length=st.integers(1, 40),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 10_000),
)
def test_every_cached_tensor_agrees_between_paths(family, batch, length, dtype, seed):
    model = small_lm(family, dtype=dtype, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.cfg.d_vocab, (batch, length), generator=generator)
    assert_paths_agree(model, tokens, dtype)


def test_paths_agree_over_long_sequences_in_float32(family):
    model = small_lm(family, dtype=torch.float32, d_model=32, d_hidden=32)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 600), generator=torch.Generator().manual_seed(1))
    assert_paths_agree(model, tokens, torch.float32)


def test_paths_agree_from_a_random_initial_state(family):
    model = small_lm(family)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 15), generator=torch.Generator().manual_seed(2))
    state = [{k: torch.randn_like(v) for k, v in layer.items()} for layer in model.initial_state(2)]
    assert_paths_agree(model, tokens, torch.float64, initial_state=state)


def test_final_state_agrees_between_paths(family):
    model = small_lm(family)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 11), generator=torch.Generator().manual_seed(3))
    _, ref_state = model(tokens, path="reference", return_state=True)
    _, fused_state = model(tokens, path="fused", return_state=True)
    for ref_layer, fused_layer in zip(ref_state, fused_state, strict=True):
        for name in ref_layer:
            torch.testing.assert_close(fused_layer[name], ref_layer[name], atol=1e-10, rtol=1e-10)


def test_fused_path_reports_which_kernel_ran(family):
    model = small_lm(family)
    _, cache = model.run_with_cache(torch.zeros(1, 4, dtype=torch.long), path="fused")
    assert cache.metadata["path"] == "fused"
    assert all(k != "reference loop" for k in cache.metadata["kernels"].values())
    _, cache = model.run_with_cache(torch.zeros(1, 4, dtype=torch.long), path="reference")
    assert set(cache.metadata["kernels"].values()) == {"reference loop"}


def test_blocks_with_mlp_and_rmsnorm_agree_between_paths(family):
    model = small_lm(family, d_mlp=20, norm="rmsnorm")
    assert "blocks.0.hook_mlp_out" in model.hook_dict
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(4))
    assert_paths_agree(model, tokens, torch.float64)


def test_paths_agree_without_gradients_where_cpu_recording_loops_run(family, monkeypatch):
    """Under no_grad the LSTM/GRU fused path writes gates in its own loop; same numbers."""
    from workbench.kernels import dispatch

    monkeypatch.setattr(dispatch, "RECORDING_LOOP_MIN_WIDTH", 0)  # the loop even at this tiny width
    model = small_lm(family, dtype=torch.float32, d_model=24, d_hidden=24)
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 200), generator=torch.Generator().manual_seed(8))
    state = [{k: torch.randn_like(v) for k, v in layer.items()} for layer in model.initial_state(3)]
    with torch.no_grad():
        assert_paths_agree(model, tokens, torch.float32, initial_state=state)
        _, cache = model.run_with_cache(tokens, path="fused")
    if family in ("lstm", "gru"):
        assert "loop" in cache.metadata["kernels"][0]


def test_narrow_cpu_recording_uses_library_kernel_plus_recovery(family, monkeypatch):
    """Below RECORDING_LOOP_MIN_WIDTH elements per step the LSTM/GRU record via the library kernel
    (the LSTM's compiled C++ loop, used at any width, switched off here)."""
    monkeypatch.setenv("WORKBENCH_NO_COMPILED", "1")
    model = small_lm(family, dtype=torch.float32, d_model=8, d_hidden=8)
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.zeros(1, 5, dtype=torch.long), path="fused")
    if family in ("lstm", "gru"):
        assert "recovery" in cache.metadata["kernels"][0]
