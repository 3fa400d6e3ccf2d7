"""The gate-writing LSTM/GRU loops equal torch.nn's equations step by step, with either matmul backend."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.kernels import rnn_recording
from workbench.kernels.rnn_recording import (
    StepMatmul,
    elman_forward_recording,
    gru_forward_recording,
    lstm_forward_recording,
    onednn_step_matmul_available,
)

from .oracles import TOL, gru_steps, lstm_steps


def _case(seed, cls, batch, pos, d_in, hidden, bias, dtype):
    torch.manual_seed(seed)
    rnn = cls(d_in, hidden, batch_first=True, bias=bias).to(dtype)
    x = torch.randn(batch, pos, d_in, dtype=dtype)
    h0, c0 = torch.randn(batch, hidden, dtype=dtype), torch.randn(batch, hidden, dtype=dtype)
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, getattr(rnn, "bias_ih_l0", None), getattr(rnn, "bias_hh_l0", None))
    return rnn, x, h0, c0, weights


SHAPES = dict(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    pos=st.one_of(st.just(1), st.integers(1, 40)),
    d_in=st.integers(1, 9),
    hidden=st.integers(1, 12),
    bias=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    onednn=st.booleans(),
)


@pytest.fixture
def backend(monkeypatch):
    """Call with onednn=False to force the torch.addmm fallback."""

    def choose(onednn: bool) -> None:
        available = onednn_step_matmul_available()
        monkeypatch.setattr(rnn_recording, "onednn_step_matmul_available", lambda: available and onednn)

    return choose


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**SHAPES)
def test_lstm_recording_matches_step_by_step(backend, seed, batch, pos, d_in, hidden, bias, dtype, onednn):
    backend(onednn)
    rnn, x, h0, c0, weights = _case(seed, torch.nn.LSTM, batch, pos, d_in, hidden, bias, dtype)
    got = lstm_forward_recording(x, h0, c0, *weights)
    expected = lstm_steps(x, h0, c0, *weights)
    for k in "ifgoch":
        assert got[k].shape == (batch, pos, hidden) and got[k].dtype == dtype
        torch.testing.assert_close(got[k], expected[k], rtol=TOL[dtype], atol=TOL[dtype], msg=k)
    with torch.no_grad():
        h, _ = rnn(x, (h0[None], c0[None]))
    torch.testing.assert_close(got["h"], h, rtol=TOL[dtype], atol=TOL[dtype])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**SHAPES)
def test_gru_recording_matches_step_by_step(backend, seed, batch, pos, d_in, hidden, bias, dtype, onednn):
    backend(onednn)
    rnn, x, h0, _, weights = _case(seed, torch.nn.GRU, batch, pos, d_in, hidden, bias, dtype)
    got = gru_forward_recording(x, h0, *weights)
    expected = gru_steps(x, h0, *weights)
    for k in "rznh":
        assert got[k].shape == (batch, pos, hidden) and got[k].dtype == dtype
        torch.testing.assert_close(got[k], expected[k], rtol=TOL[dtype], atol=TOL[dtype], msg=k)
    with torch.no_grad():
        h, _ = rnn(x, h0[None])
    torch.testing.assert_close(got["h"], h, rtol=TOL[dtype], atol=TOL[dtype])


def test_step_matmul_names_its_backend_and_computes_the_product():
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(12, 5, generator=gen), torch.randn(12, generator=gen)
    h, other = torch.randn(3, 5, generator=gen), torch.randn(3, 12, generator=gen)
    for dtype in (torch.float32, torch.float64):
        w, b, x, y = (t.to(dtype) for t in (weight, bias, h, other))
        step = StepMatmul(w, 3, b)
        packed = dtype == torch.float32 and onednn_step_matmul_available()
        assert step.backend == ("oneDNN packed matmul" if packed else "torch.addmm")
        tol = TOL[dtype]
        torch.testing.assert_close(step(x), x @ w.T + b, rtol=tol, atol=tol)
        torch.testing.assert_close(step(x, y.clone()), y + x @ w.T, rtol=tol, atol=tol)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**SHAPES)
def test_elman_recording_matches_step_by_step(backend, seed, batch, pos, d_in, hidden, bias, dtype, onednn):
    backend(onednn)
    rnn, x, h0, _, (w_ih, w_hh, b_ih, b_hh) = _case(seed, torch.nn.RNN, batch, pos, d_in, hidden, bias, dtype)
    got = elman_forward_recording(x, h0, w_ih, w_hh, b_ih, b_hh)
    h, pres = h0, []
    for t in range(pos):
        pres.append(x[:, t] @ w_ih.T + h @ w_hh.T + (0 if b_ih is None else b_ih + b_hh))
        h = torch.tanh(pres[-1])
    torch.testing.assert_close(got["pre"], torch.stack(pres, dim=1), rtol=TOL[dtype], atol=TOL[dtype])
    with torch.no_grad():
        expected_h, _ = rnn(x, h0[None])
    torch.testing.assert_close(got["h"], expected_h, rtol=TOL[dtype], atol=TOL[dtype])
