"""Readable oracles shared by the kernel tests: torch.nn's LSTM/GRU equations one step at a time,
Mamba-like S6 inputs, and the tolerance per dtype."""

from __future__ import annotations

import torch

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


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
