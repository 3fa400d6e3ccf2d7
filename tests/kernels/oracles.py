"""Readable oracles shared by the kernel tests: torch.nn's Elman/LSTM/GRU equations one step at a
time, Mamba-like S6 inputs, the tolerance per dtype, the random RNN sizes the recording-loop tests
draw, and the skip for machines that cannot build the compiled kernels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import strategies as st

from workbench.kernels import cpu_compiled

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}

# Sizes for the recording-loop tests: batch <= 4 takes the in-place product loop, above a matmul per
# step; hidden 60-80 crosses the vector width and block edges.
RNN_CASES = {
    "seed": st.integers(0, 2**31),
    "batch": st.sampled_from([1, 2, 4, 5, 9]),
    "pos": st.one_of(st.just(1), st.integers(1, 30)),
    "d_in": st.integers(1, 12),
    "hidden": st.one_of(st.integers(1, 9), st.integers(60, 80)),
    "bias": st.booleans(),
    "dtype": st.sampled_from([torch.float32, torch.float64]),
}


def require_compiled(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """`kernel`, or a skip where the compiled kernels are switched off or cannot be built here."""
    if cpu_compiled.os.environ.get(cpu_compiled.DISABLE_ENV, "") not in ("", "0"):
        pytest.skip(f"{cpu_compiled.DISABLE_ENV} is set: compiled kernels disabled")
    if not cpu_compiled.compiled_kernels_available():
        pytest.skip("the compiled CPU kernel could not be built (no C++ compiler or ninja?)")
    return kernel


def library_rnn_case(cls: type, seed: int, batch: int, pos: int, d_in: int, hidden: int, bias: bool,
                     dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, tuple]:
    """A seeded torch.nn.RNN / LSTM / GRU (`cls`) and its inputs: (module, x [batch, pos, d_in],
    h0 [batch, H], weights (w_ih, w_hh, b_ih or None, b_hh or None))."""
    torch.manual_seed(seed)
    rnn = cls(d_in, hidden, batch_first=True, bias=bias).to(dtype)
    x = torch.randn(batch, pos, d_in, dtype=dtype)
    h0 = torch.randn(batch, hidden, dtype=dtype)
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, getattr(rnn, "bias_ih_l0", None), getattr(rnn, "bias_hh_l0", None))
    return rnn, x, h0, weights


def elman_steps(x, h0, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.RNN's (tanh) equations, one position at a time: pre_t = W_ih x_t + b_ih + W_hh h_{t-1}
    + b_hh, h_t = tanh(pre_t); {"pre", "h"}, each [batch, pos, H]."""
    h, pres, hs = h0, [], []
    for t in range(x.shape[1]):
        pre = x[:, t] @ w_ih.T + h @ w_hh.T
        pre = pre + (b_ih if b_ih is not None else 0) + (b_hh if b_hh is not None else 0)
        h = torch.tanh(pre)
        pres.append(pre)
        hs.append(h)
    return {"pre": torch.stack(pres, dim=1), "h": torch.stack(hs, dim=1)}


def lstm_steps(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.LSTM's equations, one position at a time: {"i","f","g","o","c","h"}, each [batch, pos, H]."""
    h, c, out = h0, c0, {k: [] for k in "ifgoch"}
    for t in range(x.shape[1]):
        pre = x[:, t] @ w_ih.T + h @ w_hh.T + (0 if b_ih is None else b_ih + b_hh)  # [batch, 4H]
        i, f, g, o = pre.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        for k, v in zip("ifgoch", (i, f, g, o, c, h), strict=True):
            out[k].append(v)
    return {k: torch.stack(v, dim=1) for k, v in out.items()}


def gru_steps(x, h0, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.GRU's equations, one position at a time: {"r","z","n","h"}, each [batch, pos, H]."""
    h, out = h0, {k: [] for k in "rznh"}
    for t in range(x.shape[1]):
        i_r, i_z, i_n = (x[:, t] @ w_ih.T + (0 if b_ih is None else b_ih)).chunk(3, dim=-1)
        h_r, h_z, h_n = (h @ w_hh.T + (0 if b_hh is None else b_hh)).chunk(3, dim=-1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        for k, v in zip("rznh", (r, z, n, h), strict=True):
            out[k].append(v)
    return {k: torch.stack(v, dim=1) for k, v in out.items()}


def s6_inputs(seed, batch, pos, d, n, dtype):
    """Mamba-like inputs: delta = softplus(.), A = -exp(.) negative reals, unit-scale u, B, C, D."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, pos, d, dtype=dtype, generator=gen)  # [batch, pos, d]
    delta = torch.nn.functional.softplus(torch.randn(batch, pos, d, dtype=dtype, generator=gen) - 1)
    A = -torch.exp(torch.randn(d, n, dtype=dtype, generator=gen))  # [d, n]
    B = torch.randn(batch, pos, n, dtype=dtype, generator=gen)  # [batch, pos, n]
    C = torch.randn(batch, pos, n, dtype=dtype, generator=gen)
    D = torch.randn(d, dtype=dtype, generator=gen)
    state0 = torch.randn(batch, d, n, dtype=dtype, generator=gen)  # [batch, d, n]
    return u, delta, A, B, C, D, state0
