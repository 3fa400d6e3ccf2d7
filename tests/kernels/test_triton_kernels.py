"""The Triton kernels equal their readable references (on CPU under TRITON_INTERPRET=1; on a GPU natively).

Shapes are drawn by hypothesis, including length 1, batches and widths that are not multiples of
the kernels' block sizes, and a decay broadcast over the state (Mamba2's per-head scalar).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.kernels.linear_scan import linear_scan_reference
from workbench.kernels.triton_scan import triton_available

from .oracles import gru_steps, lstm_steps

pytestmark = pytest.mark.skipif(not triton_available(), reason="triton is not installed (optional extra)")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@settings(max_examples=12, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 9),
    state=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    with_h0=st.booleans(),
    broadcast_a=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_triton_linear_scan_equals_the_loop(batch, length, state, with_h0, broadcast_a, seed):
    from workbench.kernels.triton_scan import triton_linear_scan

    gen = torch.Generator().manual_seed(seed)
    a_shape = [batch, length, *state[:-1], 1] if broadcast_a else [batch, length, *state]
    a = torch.rand(a_shape, generator=gen).to(DEVICE)
    b = torch.randn(batch, length, *state, generator=gen).to(DEVICE)
    h0 = torch.randn(batch, *state, generator=gen).to(DEVICE) if with_h0 else None
    got = triton_linear_scan(a, b, h0)
    want = linear_scan_reference(a, b, h0)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_triton_linear_scan_keeps_the_input_dtype_and_accumulates_in_float32():
    from workbench.kernels.triton_scan import triton_linear_scan

    a = torch.full((1, 64, 3), 0.999, dtype=torch.float64, device=DEVICE)
    b = torch.full((1, 64, 3), 1e-3, dtype=torch.float64, device=DEVICE)
    got = triton_linear_scan(a, b)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, linear_scan_reference(a, b), rtol=1e-6, atol=1e-7)


@settings(max_examples=6, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 5), d_in=st.integers(1, 6), hidden=st.integers(1, 20),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_triton_lstm_recording_equals_the_equations(batch, length, d_in, hidden, bias, seed):
    from workbench.kernels.triton_rnn import triton_lstm_forward_recording

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, d_in, generator=gen)
    h0, c0 = torch.randn(batch, hidden, generator=gen), torch.randn(batch, hidden, generator=gen)
    w_ih = torch.randn(4 * hidden, d_in, generator=gen) * 0.5
    w_hh = torch.randn(4 * hidden, hidden, generator=gen) * 0.5
    b_ih = torch.randn(4 * hidden, generator=gen) if bias else torch.zeros(4 * hidden)
    b_hh = torch.randn(4 * hidden, generator=gen) if bias else torch.zeros(4 * hidden)
    want = lstm_steps(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    args = [t.to(DEVICE) for t in (x, h0, c0, w_ih, w_hh)]
    got = triton_lstm_forward_recording(*args, b_ih.to(DEVICE) if bias else None, b_hh.to(DEVICE) if bias else None)
    for key in "ifgoch":
        torch.testing.assert_close(got[key].cpu(), want[key], rtol=1e-5, atol=1e-5, msg=key)


@settings(max_examples=6, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 5), d_in=st.integers(1, 6), hidden=st.integers(1, 20),
       seed=st.integers(0, 2**16))
def test_triton_gru_recording_equals_the_equations(batch, length, d_in, hidden, seed):
    from workbench.kernels.triton_rnn import triton_gru_forward_recording

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, d_in, generator=gen)
    h0 = torch.randn(batch, hidden, generator=gen)
    w_ih = torch.randn(3 * hidden, d_in, generator=gen) * 0.5
    w_hh = torch.randn(3 * hidden, hidden, generator=gen) * 0.5
    b_ih, b_hh = torch.randn(3 * hidden, generator=gen), torch.randn(3 * hidden, generator=gen)
    want = gru_steps(x, h0, w_ih, w_hh, b_ih, b_hh)
    got = triton_gru_forward_recording(*(t.to(DEVICE) for t in (x, h0, w_ih, w_hh, b_ih, b_hh)))
    for key in "rznh":
        torch.testing.assert_close(got[key].cpu(), want[key], rtol=1e-5, atol=1e-5, msg=key)


def test_triton_lstm_matches_torch_nn_lstm_on_a_hidden_size_spanning_several_blocks():
    """H = 80 spans three 32-unit blocks and two 64-wide K blocks (masked tails in both)."""
    from workbench.kernels.triton_rnn import triton_lstm_forward_recording

    torch.manual_seed(0)
    torch.backends.cudnn.allow_tf32 = False  # cuDNN's default TF32 would make the oracle approximate
    lstm = torch.nn.LSTM(7, 80, batch_first=True).to(DEVICE)
    x = torch.randn(2, 6, 7, device=DEVICE)
    h0, c0 = torch.zeros(2, 80, device=DEVICE), torch.zeros(2, 80, device=DEVICE)
    with torch.no_grad():
        want, (h_n, c_n) = lstm(x, (h0[None], c0[None]))
    weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    got = triton_lstm_forward_recording(x, h0, c0, *weights)
    torch.testing.assert_close(got["h"], want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["c"][:, -1], c_n[0], rtol=1e-5, atol=1e-5)


def test_triton_rnn_kernels_reject_wrong_shapes():
    from workbench.kernels.triton_rnn import triton_lstm_forward_recording

    with pytest.raises(ValueError, match="4H, H"):
        triton_lstm_forward_recording(torch.zeros(1, 2, 3), torch.zeros(1, 4), torch.zeros(1, 4),
                                      torch.zeros(16, 3), torch.zeros(12, 4))


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 2), length=st.integers(1, 7), d=st.integers(1, 20), n=st.integers(1, 17),
       with_state=st.booleans(), states=st.booleans(), seed=st.integers(0, 2**16))
def test_triton_selective_scan_equals_the_s6_loop(batch, length, d, n, with_state, states, seed):
    from workbench.kernels.selective_scan import selective_scan_reference
    from workbench.kernels.triton_selective_scan import triton_selective_scan

    gen = torch.Generator().manual_seed(seed)
    u, delta = torch.randn(batch, length, d, generator=gen), torch.rand(batch, length, d, generator=gen)
    A = -torch.rand(d, n, generator=gen) * 2
    B, C = torch.randn(batch, length, n, generator=gen), torch.randn(batch, length, n, generator=gen)
    D = torch.randn(d, generator=gen)
    s0 = torch.randn(batch, d, n, generator=gen) if with_state else None
    want_y, want_s = selective_scan_reference(u, delta, A, B, C, D, s0, return_states=states)
    moved = [None if t is None else t.to(DEVICE) for t in (u, delta, A, B, C, D, s0)]
    got_y, got_s = triton_selective_scan(*moved, return_states=states)
    torch.testing.assert_close(got_y.cpu(), want_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_s.cpu(), want_s, rtol=1e-5, atol=1e-5)


def test_triton_scans_reject_shapes_that_do_not_fit():
    from workbench.kernels.triton_scan import triton_linear_scan
    from workbench.kernels.triton_selective_scan import triton_selective_scan

    with pytest.raises(ValueError, match=r"\[batch, pos, \*state\]"):
        triton_linear_scan(torch.rand(5), torch.rand(5))
    u = torch.zeros(1, 4, 3)
    A, D = -torch.ones(3, 2), torch.zeros(3)
    with pytest.raises(ValueError, match="do not fit S6"):
        triton_selective_scan(u, u, A, torch.zeros(1, 4, 2), torch.zeros(1, 4, 5), D)  # C has the wrong n
    with pytest.raises(ValueError, match="do not fit S6"):
        triton_selective_scan(u, u[:, :2], A, torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), D)
