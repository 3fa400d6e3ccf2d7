"""LSTM and GRU forwards that write every gate as they go, for recording on CPU without autograd.

Gate recovery after the library kernel (`rnn_gates`) repeats the library's two large matmuls, so
recording costs about three plain forwards. These loops do the library's own work once: one
matmul for the input projection of every position, then per position one `addmm` for the recurrent
projection and in-place gate nonlinearities written straight into preallocated `[pos, batch, ...]`
buffers. Measured at batch 16, 1024 positions, width 512 on a 2-core CPU: ~1.3x torch.nn.LSTM
(benchmarks/bench_paths.py). In-place writes make them forward-only: callers use gate recovery when
gradients are needed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def lstm_forward_recording(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> dict[str, Tensor]:
    """LSTM (PyTorch gate order i, f, g, o) over x [batch, pos, d_in] from h0, c0 [batch, H].

    Returns {"i", "f", "g", "o", "c", "h"}, each [batch, pos, H] (views of position-major buffers).
    """
    batch, length, d_in = x.shape
    hidden = weight_hh.shape[1]
    with torch.no_grad():
        # [pos, batch, 4H]: the input projection of every position, position-major for the loop
        gates = torch.addmm(bias_ih + bias_hh, x.transpose(0, 1).reshape(-1, d_in), weight_ih.T)
        gates = gates.view(length, batch, 4 * hidden)
        recurrent_weight = weight_hh.T.contiguous()  # [H, 4H]
        cells = torch.empty(length, batch, hidden, dtype=x.dtype, device=x.device)
        hiddens = torch.empty_like(cells)
        h, c = h0, c0
        for t in range(length):
            gate = gates[t]  # [batch, 4H]
            gate.addmm_(h, recurrent_weight)
            gate[:, : 2 * hidden].sigmoid_()
            gate[:, 2 * hidden : 3 * hidden].tanh_()
            gate[:, 3 * hidden :].sigmoid_()
            i, f, g, o = gate.split(hidden, dim=1)
            c = torch.addcmul(f * c, i, g, out=cells[t])
            h = torch.mul(o, torch.tanh(c), out=hiddens[t])
    by_batch = gates.transpose(0, 1)  # [batch, pos, 4H]
    quarters = {name: by_batch[..., k * hidden : (k + 1) * hidden] for k, name in enumerate("ifgo")}
    return {**quarters, "c": cells.transpose(0, 1), "h": hiddens.transpose(0, 1)}


def gru_forward_recording(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
) -> dict[str, Tensor]:
    """GRU in PyTorch's convention over x [batch, pos, d_in] from h0 [batch, H].

    r, z = σ(W_i· x + b_i· + W_h· h + b_h·); n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn));
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}. Returns {"r", "z", "n", "h"}, each [batch, pos, H].
    """
    batch, length, d_in = x.shape
    hidden = weight_hh.shape[1]
    with torch.no_grad():
        inputs = torch.addmm(bias_ih, x.transpose(0, 1).reshape(-1, d_in), weight_ih.T)
        inputs = inputs.view(length, batch, 3 * hidden)  # [pos, batch, 3H]; becomes r, z, n
        recurrent_weight = weight_hh.T.contiguous()  # [H, 3H]
        hiddens = torch.empty(length, batch, hidden, dtype=x.dtype, device=x.device)
        h = h0
        for t in range(length):
            gate = inputs[t]  # [batch, 3H]
            from_h = torch.addmm(bias_hh, h, recurrent_weight)  # [batch, 3H]
            gate[:, : 2 * hidden].add_(from_h[:, : 2 * hidden]).sigmoid_()
            r, z, n = gate.split(hidden, dim=1)
            n.addcmul_(r, from_h[:, 2 * hidden :]).tanh_()
            h = torch.addcmul(n, z, h - n, out=hiddens[t])
    by_batch = inputs.transpose(0, 1)  # [batch, pos, 3H]
    thirds = {name: by_batch[..., k * hidden : (k + 1) * hidden] for k, name in enumerate("rzn")}
    return {**thirds, "h": hiddens.transpose(0, 1)}
