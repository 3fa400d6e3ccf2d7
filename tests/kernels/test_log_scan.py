"""log_space_scan equals the step-by-step log-space reference; g and log_g follow Feng et al. 2024."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.kernels import (
    g,
    linear_scan_reference,
    log_g,
    log_space_scan,
    log_space_scan_heinsen,
    log_space_scan_reference,
)

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]


def _mingru_inputs(seed, batch, pos, state, dtype):
    """minGRU's log coefficients: log a = log(1 - z) = -softplus(k), log b = log z + log g(x)."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(batch, pos, *state, dtype=dtype, generator=gen) * 2
    x = torch.randn(batch, pos, *state, dtype=dtype, generator=gen) * 2
    log_a = -torch.nn.functional.softplus(k)
    log_b = -torch.nn.functional.softplus(-k) + log_g(x)
    log_h0 = log_g(torch.randn(batch, *state, dtype=dtype, generator=gen))
    return log_a, log_b, log_h0


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    pos=st.one_of(st.just(1), st.integers(1, 300)),
    state=st.sampled_from([(), (1,), (5,), (2, 3)]),
    dtype=st.sampled_from(DTYPES),
    chunk_size=st.sampled_from([None, 1, 3, 16, 32, 64]),
    with_h0=st.booleans(),
)
def test_log_space_scan_matches_reference(seed, batch, pos, state, dtype, chunk_size, with_h0):
    log_a, log_b, log_h0 = _mingru_inputs(seed, batch, pos, state, dtype)
    log_h0 = log_h0 if with_h0 else None
    expected = log_space_scan_reference(log_a, log_b, log_h0)
    actual = log_space_scan(log_a, log_b, log_h0, chunk_size=chunk_size)
    assert actual.shape == (batch, pos, *state) and actual.dtype == dtype
    torch.testing.assert_close(actual, expected, rtol=TOL[dtype], atol=TOL[dtype])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    pos=st.one_of(st.just(1), st.integers(1, 300)),
    dtype=st.sampled_from(DTYPES),
    chunk_size=st.sampled_from([1, 4, 16]),
    with_h0=st.booleans(),
)
def test_heinsen_closed_form_matches_reference_within_its_bound(seed, pos, dtype, chunk_size, with_h0):
    log_a, log_b, log_h0 = _mingru_inputs(seed, 2, pos, (3,), dtype)
    log_h0 = log_h0 if with_h0 else None
    expected = log_space_scan_reference(log_a, log_b, log_h0)
    actual = log_space_scan_heinsen(log_a, log_b, log_h0, chunk_size=chunk_size)
    # documented bound: relative error ~ eps * chunk_size * max|log a|
    eps = torch.finfo(dtype).eps
    rtol = max(TOL[dtype], 4 * eps * chunk_size * log_a.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_space_scan_reference_equals_linear_scan(dtype):
    log_a, log_b, log_h0 = _mingru_inputs(0, 2, 50, (4,), dtype)
    expected = linear_scan_reference(log_a.exp(), log_b.exp(), log_h0.exp())
    torch.testing.assert_close(log_space_scan_reference(log_a, log_b, log_h0), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_space_scan_stays_precise_over_long_sequences(dtype):
    # a close to 1 over 4096 steps: without per-chunk resets a* reaches ~ -4000 and float32
    # loses ~4000 * eps relative precision; with resets the error stays at the chunk's level
    log_a, log_b, log_h0 = _mingru_inputs(1, 2, 4096, (4,), dtype)
    log_a = log_a.clamp(min=-1.0)
    expected = log_space_scan_reference(log_a, log_b, log_h0)
    actual = log_space_scan(log_a, log_b, log_h0)
    torch.testing.assert_close(actual, expected, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_space_scan_handles_tiny_and_huge_terms(dtype):
    # log a = -200 would underflow exp(); the log-space scan must not produce inf or nan
    log_a, log_b, log_h0 = _mingru_inputs(2, 2, 100, (3,), dtype)
    log_a[:, ::7] = -200.0
    expected = log_space_scan_reference(log_a, log_b, log_h0)
    actual = log_space_scan(log_a, log_b, log_h0, chunk_size=8)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, rtol=TOL[dtype], atol=TOL[dtype])


def test_log_space_scan_gradients_are_finite_and_match_reference():
    log_a, log_b, log_h0 = _mingru_inputs(3, 2, 37, (3,), torch.float64)
    for h0 in (log_h0, None):
        grads = []
        for scan in (log_space_scan_reference, lambda *x: log_space_scan(*x, chunk_size=8)):
            leaves = [x.clone().requires_grad_() for x in (log_a, log_b)]
            (scan(*leaves, h0) ** 2).sum().backward()
            grads.append([x.grad for x in leaves])
        for fast, ref in zip(*grads, strict=True):
            assert torch.isfinite(fast).all()
            torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_g_is_positive_continuous_and_log_g_is_its_log(dtype):
    x = torch.linspace(-60, 60, 10001, dtype=dtype)
    assert (g(x) > 0).all()
    torch.testing.assert_close(g(torch.zeros((), dtype=dtype)), torch.tensor(0.5, dtype=dtype))
    torch.testing.assert_close(log_g(x), torch.log(g(x)))
    torch.testing.assert_close(g(x[x >= 0]), x[x >= 0] + 0.5)
    torch.testing.assert_close(g(x[x < 0]), torch.sigmoid(x[x < 0]))
    # stable far in the negative tail, where log(sigmoid(x)) would be log(0)
    far = torch.tensor([-200.0, -1000.0], dtype=dtype, requires_grad=True)
    torch.testing.assert_close(log_g(far), far.detach())
    log_g(far).sum().backward()
    assert torch.isfinite(far.grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_space_scan_wide_steps_in_place_match_reference(dtype):
    # batch * state >= SEQUENTIAL_WIDTH takes the in-place sequential CPU path without grad
    log_a, log_b, log_h0 = _mingru_inputs(4, 2, 70, (64, 64), dtype)
    for h0 in (log_h0, None):
        expected = log_space_scan_reference(log_a, log_b, h0)
        actual = log_space_scan(log_a, log_b, h0)
        torch.testing.assert_close(actual, expected, rtol=TOL[dtype], atol=TOL[dtype])
