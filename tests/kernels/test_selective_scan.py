"""selective_scan equals the step-by-step S6 loop of Gu & Dao 2023 in both return modes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.kernels import linear_scan_reference, selective_scan, selective_scan_reference
from workbench.kernels.selective_scan import s6_chunk_size

from .oracles import TOL, s6_inputs

DTYPES = [torch.float32, torch.float64]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    pos=st.one_of(st.just(1), st.integers(1, 200)),
    d=st.integers(1, 6),
    n=st.integers(1, 5),
    dtype=st.sampled_from(DTYPES),
    chunk_size=st.sampled_from([None, 1, 5, 32, 128]),
    with_state0=st.booleans(),
    return_states=st.booleans(),
)
def test_selective_scan_matches_reference(
    seed, batch, pos, d, n, dtype, chunk_size, with_state0, return_states
):
    u, delta, A, B, C, D, state0 = s6_inputs(seed, batch, pos, d, n, dtype)
    state0 = state0 if with_state0 else None
    y_ref, s_ref = selective_scan_reference(u, delta, A, B, C, D, state0, return_states)
    y, s = selective_scan(u, delta, A, B, C, D, state0, return_states, chunk_size=chunk_size)
    assert y.shape == (batch, pos, d)
    assert s.shape == ((batch, pos, d, n) if return_states else (batch, d, n))
    torch.testing.assert_close(y, y_ref, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(s, s_ref, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_selective_scan_reference_is_the_papers_recurrence(dtype):
    # s_t = exp(delta_t A) s_{t-1} + delta_t u_t B_t, y_t = C_t s_t + D u_t, via linear_scan_reference
    u, delta, A, B, C, D, state0 = s6_inputs(0, 2, 40, 3, 4, dtype)
    a = torch.exp(delta[..., None] * A)  # [batch, pos, d, n]
    b = (delta * u)[..., None] * B[:, :, None, :]  # [batch, pos, d, n]
    states = linear_scan_reference(a, b, state0)
    y = (states * C[:, :, None, :]).sum(-1) + D * u
    y_ref, s_ref = selective_scan_reference(u, delta, A, B, C, D, state0, return_states=True)
    torch.testing.assert_close(y_ref, y)
    torch.testing.assert_close(s_ref, states)


@pytest.mark.parametrize("dtype", DTYPES)
def test_selective_scan_long_sequence_matches_reference(dtype):
    u, delta, A, B, C, D, state0 = s6_inputs(1, 2, 1100, 8, 4, dtype)
    y_ref, s_ref = selective_scan_reference(u, delta, A, B, C, D, state0)
    y, s = selective_scan(u, delta, A, B, C, D, state0)
    torch.testing.assert_close(y, y_ref, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(s, s_ref, rtol=TOL[dtype], atol=TOL[dtype])


def test_selective_scan_gradients_match_reference():
    inputs = s6_inputs(2, 2, 45, 3, 2, torch.float64)
    grads = []
    for scan in (selective_scan_reference, lambda *x: selective_scan(*x, chunk_size=16)):
        leaves = [x.clone().requires_grad_() for x in inputs]
        y, s = scan(*leaves)
        ((y**2).sum() + (s**2).sum()).backward()
        grads.append([x.grad for x in leaves])
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)


def test_default_chunk_keeps_one_chunk_buffer_near_four_mebibytes():
    assert s6_chunk_size(16, 1024, 16) == 4  # 16 * 4 * 1024 * 16 = 2**20 elements
    assert s6_chunk_size(4, 1024, 16) == 16
    assert s6_chunk_size(1, 8, 4) == 64  # capped
    assert s6_chunk_size(64, 8192, 16) == 1
