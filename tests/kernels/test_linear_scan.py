"""linear_scan equals the step-by-step linear_scan_reference (h_t = a_t h_{t-1} + b_t)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.kernels import linear_scan, linear_scan_reference
from workbench.kernels.linear_scan import default_chunk_size

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]


def _inputs(seed, batch, pos, state, dtype, a_state=None, a_low=-1.0, a_high=1.0):
    gen = torch.Generator().manual_seed(seed)
    a_state = state if a_state is None else a_state
    a = torch.empty(batch, pos, *a_state, dtype=dtype).uniform_(a_low, a_high, generator=gen)
    b = torch.randn(batch, pos, *state, dtype=dtype, generator=gen)
    h0 = torch.randn(batch, *state, dtype=dtype, generator=gen)
    return a, b, h0


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    pos=st.one_of(st.just(1), st.integers(1, 300)),
    state=st.sampled_from([(), (1,), (5,), (2, 3)]),
    dtype=st.sampled_from(DTYPES),
    chunk_size=st.sampled_from([None, 1, 2, 7, 16, 64]),
    with_h0=st.booleans(),
)
def test_linear_scan_matches_reference(seed, batch, pos, state, dtype, chunk_size, with_h0):
    a, b, h0 = _inputs(seed, batch, pos, state, dtype)
    h0 = h0 if with_h0 else None
    expected = linear_scan_reference(a, b, h0)
    actual = linear_scan(a, b, h0, chunk_size=chunk_size)
    assert actual.shape == (batch, pos, *state) and actual.dtype == dtype
    torch.testing.assert_close(actual, expected, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_scan_broadcasts_a_over_trailing_state_dim(dtype):
    a, b, h0 = _inputs(0, 2, 100, (4, 3), dtype, a_state=(4, 1), a_low=0.5)
    expected = linear_scan_reference(a.expand_as(b), b, h0)
    torch.testing.assert_close(linear_scan(a, b, h0, chunk_size=8), expected, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_scan_growing_states_match_reference_relatively(dtype):
    # a near 1 lets h grow like a random walk; compare relative to the magnitude
    a, b, h0 = _inputs(1, 2, 1024, (8,), dtype, a_low=0.999, a_high=1.0)
    b = b + 1.0
    expected = linear_scan_reference(a, b, h0)
    torch.testing.assert_close(linear_scan(a, b, h0), expected, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_scan_is_exact_when_products_of_a_underflow(dtype):
    # prod of a underflows after a few steps; closed forms dividing by cumprod(a) give inf/nan
    a, b, h0 = _inputs(2, 2, 1024, (8,), dtype, a_low=1e-30, a_high=1e-20)
    a[:, ::5] = 0.9  # and some ordinary steps in between
    expected = linear_scan_reference(a, b, h0)
    actual = linear_scan(a, b, h0)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_scan_single_position_is_one_step(dtype):
    a, b, h0 = _inputs(3, 4, 1, (6,), dtype)
    torch.testing.assert_close(linear_scan(a, b, h0), (a[:, 0] * h0 + b[:, 0])[:, None])
    torch.testing.assert_close(linear_scan(a, b), b)


def test_linear_scan_gradients_match_reference():
    a, b, h0 = _inputs(4, 2, 70, (3,), torch.float64)
    grads = []
    for scan in (linear_scan_reference, lambda *x: linear_scan(*x, chunk_size=8)):
        leaves = [x.clone().requires_grad_() for x in (a, b, h0)]
        (scan(*leaves) ** 2).sum().backward()
        grads.append([x.grad for x in leaves])
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)


def test_linear_scan_passes_gradcheck():
    a, b, h0 = (x.requires_grad_() for x in _inputs(5, 1, 11, (2,), torch.float64))
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, chunk_size=4), (a, b, h0))


def test_default_chunk_size_is_a_power_of_two_near_sqrt_half_pos():
    assert [default_chunk_size(p) for p in (1, 2, 256, 1024, 4096)] == [2, 2, 8, 16, 32]


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_scan_wide_steps_in_place_match_reference(dtype):
    # batch * state >= SEQUENTIAL_WIDTH takes the in-place sequential CPU path without grad
    a, b, h0 = _inputs(6, 2, 70, (64, 64), dtype)
    expected = linear_scan_reference(a, b, h0)
    torch.testing.assert_close(linear_scan(a, b, h0), expected, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(
        linear_scan(a, b), linear_scan_reference(a, b), rtol=TOL[dtype], atol=TOL[dtype]
    )


def test_scans_accept_an_empty_sequence():
    from workbench.kernels import log_space_scan, selective_scan

    b = torch.randn(2, 0, 3)
    h0 = torch.randn(2, 3)
    assert linear_scan(b, b, h0).shape == (2, 0, 3)
    assert linear_scan(b.requires_grad_(), b, h0).shape == (2, 0, 3)
    assert log_space_scan(b, b, h0).shape == (2, 0, 3)
    u, A, B = torch.randn(2, 0, 4), -torch.rand(4, 5), torch.randn(2, 0, 5)
    state0 = torch.randn(2, 4, 5)
    y, s = selective_scan(u, u, A, B, B, torch.randn(4), state0)
    assert y.shape == (2, 0, 4) and torch.equal(s, state0)
    y, states = selective_scan(u.requires_grad_(), u, A, B, B, torch.randn(4), state0, return_states=True)
    assert states.shape == (2, 0, 4, 5)
