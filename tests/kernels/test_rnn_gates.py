"""Gates recovered from a fused torch.nn.LSTM / GRU / RNN equal a step-by-step recomputation."""

from __future__ import annotations

import pytest
import torch

from workbench.kernels import elman_pre_from_hidden, gru_gates_from_hidden, lstm_gates_from_hidden

from .oracles import TOL, gru_steps, lstm_steps

DTYPES = [torch.float32, torch.float64]
CASES = [(dtype, pos, bias) for dtype in DTYPES for pos in (1, 300) for bias in (True, False)]


def _fused(cls, dtype, pos, bias, seed=0, batch=3, d_in=5, hidden=16, **kwargs):
    torch.manual_seed(seed)
    rnn = cls(d_in, hidden, batch_first=True, bias=bias, **kwargs).to(dtype)
    x = torch.randn(batch, pos, d_in, dtype=dtype)
    h0 = torch.randn(batch, hidden, dtype=dtype)
    c0 = torch.randn(batch, hidden, dtype=dtype)
    return rnn, x, h0, c0


def _weights(rnn):
    return (
        rnn.weight_ih_l0,
        rnn.weight_hh_l0,
        getattr(rnn, "bias_ih_l0", None),
        getattr(rnn, "bias_hh_l0", None),
    )


def _linear(x, w, b):
    return x @ w.T + (0 if b is None else b)


def _elman_steps(x, h0, w_ih, w_hh, b_ih, b_hh):
    h, pres, hs = h0, [], []
    for t in range(x.shape[1]):
        pre = _linear(x[:, t], w_ih, b_ih) + _linear(h, w_hh, b_hh)
        h = torch.tanh(pre)
        pres.append(pre)
        hs.append(h)
    return torch.stack(pres, dim=1), torch.stack(hs, dim=1)


@pytest.mark.parametrize(("dtype", "pos", "bias"), CASES)
def test_lstm_gates_from_hidden_match_step_by_step(dtype, pos, bias):
    lstm, x, h0, c0 = _fused(torch.nn.LSTM, dtype, pos, bias)
    with torch.no_grad():
        h, (h_n, c_n) = lstm(x, (h0[None], c0[None]))
        gates = lstm_gates_from_hidden(x, h, h0, c0, *_weights(lstm))
        steps = lstm_steps(x, h0, c0, *_weights(lstm))
    tol = TOL[dtype]
    torch.testing.assert_close(steps["h"], h, rtol=tol, atol=tol)  # the oracle is the fused LSTM
    for k in "ifgoc":
        assert gates[k].shape == h.shape
        torch.testing.assert_close(gates[k], steps[k], rtol=tol, atol=tol)
    torch.testing.assert_close(gates["c"][:, -1], c_n[0], rtol=tol, atol=tol)
    torch.testing.assert_close(gates["o"] * torch.tanh(gates["c"]), h, rtol=tol, atol=tol)


@pytest.mark.parametrize(("dtype", "pos", "bias"), CASES)
def test_gru_gates_from_hidden_match_step_by_step(dtype, pos, bias):
    gru, x, h0, _ = _fused(torch.nn.GRU, dtype, pos, bias, seed=1)
    with torch.no_grad():
        h, _ = gru(x, h0[None])
        gates = gru_gates_from_hidden(x, h, h0, *_weights(gru))
        steps = gru_steps(x, h0, *_weights(gru))
    tol = TOL[dtype]
    torch.testing.assert_close(steps["h"], h, rtol=tol, atol=tol)
    for k in "rzn":
        torch.testing.assert_close(gates[k], steps[k], rtol=tol, atol=tol)
    h_prev = torch.cat([h0[:, None], h[:, :-1]], dim=1)
    rebuilt = (1 - gates["z"]) * gates["n"] + gates["z"] * h_prev
    torch.testing.assert_close(rebuilt, h, rtol=tol, atol=tol)


@pytest.mark.parametrize(("dtype", "pos", "bias"), CASES)
def test_elman_pre_from_hidden_matches_step_by_step(dtype, pos, bias):
    rnn, x, h0, _ = _fused(torch.nn.RNN, dtype, pos, bias, seed=2)
    with torch.no_grad():
        h, _ = rnn(x, h0[None])
        pre = elman_pre_from_hidden(x, h, h0, *_weights(rnn))
        pre_steps, h_steps = _elman_steps(x, h0, *_weights(rnn))
    tol = TOL[dtype]
    torch.testing.assert_close(h_steps, h, rtol=tol, atol=tol)
    torch.testing.assert_close(pre, pre_steps, rtol=tol, atol=tol)
    torch.testing.assert_close(torch.tanh(pre), h, rtol=tol, atol=tol)


def test_lstm_gates_are_differentiable_in_the_weights():
    lstm, x, h0, c0 = _fused(torch.nn.LSTM, torch.float64, 20, True)
    h, _ = lstm(x, (h0[None], c0[None]))
    gates = lstm_gates_from_hidden(x, h, h0, c0, *_weights(lstm))
    gates["c"].sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lstm.parameters())


def _from_fused_h_steps(cell, x, h, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """Every gate from x_t and the fused h_{t-1}, one position at a time (c by its own loop)."""
    h_prev, c, out = h0, c0, []
    for t in range(x.shape[1]):
        gi, gh = _linear(x[:, t], w_ih, b_ih), _linear(h_prev, w_hh, b_hh)
        if cell == "lstm":
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            out.append({"i": i, "f": f, "g": g, "o": o, "c": c})
        elif cell == "gru":
            (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3, dim=-1), gh.chunk(3, dim=-1)
            r = torch.sigmoid(i_r + h_r)
            out.append({"r": r, "z": torch.sigmoid(i_z + h_z), "n": torch.tanh(i_n + r * h_n)})
        else:
            out.append({"pre": gi + gh})
        h_prev = h[:, t]
    return {k: torch.stack([step[k] for step in out], dim=1) for k in out[0]}


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
def test_recovered_gates_have_the_step_by_step_gradients(cell):
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}[cell]
    rnn, x, h0, c0 = _fused(cls, torch.float64, 25, True, seed=3, hidden=6)
    with torch.no_grad():
        h, _ = rnn(x, (h0[None], c0[None]) if cell == "lstm" else h0[None])
    leaves = [t.clone().requires_grad_() for t in (x, h, h0, c0)]
    weights = _weights(rnn)
    x_, h_, h0_, c0_ = leaves
    if cell == "lstm":
        fast = lstm_gates_from_hidden(x_, h_, h0_, c0_, *weights)
    elif cell == "gru":
        fast = gru_gates_from_hidden(x_, h_, h0_, *weights)
    else:
        fast = {"pre": elman_pre_from_hidden(x_, h_, h0_, *weights)}
    steps = _from_fused_h_steps(cell, *leaves, *weights)
    inputs = [*leaves, *weights]
    grads = []
    for gates in (fast, steps):
        probe = {
            k: torch.randn(v.shape, dtype=v.dtype, generator=torch.Generator().manual_seed(0))
            for k, v in gates.items()
        }
        loss = sum((gates[k] * probe[k]).sum() for k in gates)
        grads.append(torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True))
    for fast_grad, step_grad in zip(*grads, strict=True):
        torch.testing.assert_close(fast_grad, step_grad, rtol=1e-10, atol=1e-10)
