"""Triton LSTM and GRU forwards that write every gate and state as they go, for recording on CUDA.

cuDNN returns only h (and the last c), so recording an LSTM through it means recomputing every gate
afterwards (`rnn_gates`). These kernels do the recurrence once and write the gates on the way:

1. one cuBLAS matmul gives the input projection W_ih x_t + b for every position at once
   ([batch, pos, 4H] for the LSTM, [batch, pos, 3H] for the GRU);
2. per position, one fused Triton kernel computes h_{t-1} W_hh^T block by block (`tl.dot` in full
   float32, no TF32, so the numbers match the readable loop), applies the gate nonlinearities and the
   cell update, and stores the gates, c_t and h_t straight into the recorded [batch, pos, ...]
   tensors. Program (i, j) owns batch rows block i and hidden units block j, for all four (three)
   gates of those units, so no gate pre-activation ever goes back to memory.

The positions are sequential by nature (h_t needs all of h_{t-1}), so there is one launch per
position; `capture_graph=True` records those launches once as a CUDA graph and replays it.
Equations and weight layout are PyTorch's (torch.nn.LSTM rows i, f, g, o; torch.nn.GRU rows r, z, n
with n = tanh(W_in x + b_in + r * (W_hn h + b_hn))). Forward only.
Correctness is tested on CPU under Triton's interpreter (TRITON_INTERPRET=1).

Measured on an H100 (benchmarks/gpu_results.md): these kernels take 2.4-13x the plain cuDNN forward,
while cuDNN followed by our parallel gate recovery (`rnn_gates`) takes 0.8-2.0x (mostly 1.0-1.3x).
One launch per position, and a recurrent matmul spread over few programs, cannot match cuDNN's
persistent kernel, so the mixers' fused path on CUDA uses cuDNN + recovery and these stay an
explicit alternative (exact to the equations, no recovery error) rather than the default.
"""

from __future__ import annotations

import torch
from torch import Tensor

from workbench.kernels.triton_scan import triton, triton_available

__all__ = ["triton_available", "triton_gru_forward_recording", "triton_lstm_forward_recording"]

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _sigmoid(x):
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit
    def _tanh(x):
        return 2.0 * _sigmoid(2.0 * x) - 1.0

    @triton.jit
    def _recurrent_block(h_prev_ptr, stride_hb, w_ptr, hidden, rows, row_mask, units, unit_mask, gate,
                         BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
        """h_{t-1}[rows, :] @ W_hh[gate * H + units, :]^T  ->  [BLOCK_B, BLOCK_H], float32."""
        acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
        for k0 in range(0, hidden, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_mask = ks < hidden
            h = tl.load(h_prev_ptr + rows[:, None] * stride_hb + ks[None, :],
                        mask=row_mask[:, None] & k_mask[None, :], other=0.0)  # [BLOCK_B, BLOCK_K]
            w = tl.load(w_ptr + (gate * hidden + units[None, :]) * hidden + ks[:, None],
                        mask=k_mask[:, None] & unit_mask[None, :], other=0.0)  # [BLOCK_K, BLOCK_H]
            acc += tl.dot(h.to(tl.float32), w.to(tl.float32), input_precision="ieee")
        return acc

    @triton.jit
    def _lstm_step_kernel(
        proj_ptr, w_ptr, h_prev_ptr, c_prev_ptr, gates_ptr, c_ptr, h_ptr,
        batch, hidden,
        stride_pb, stride_hpb, stride_cpb, stride_gb, stride_sb,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        row_mask = rows < batch
        unit_mask = units < hidden
        mask = row_mask[:, None] & unit_mask[None, :]
        proj = proj_ptr + rows[:, None] * stride_pb + units[None, :]  # this position's projection
        gate_out = gates_ptr + rows[:, None] * stride_gb + units[None, :]
        pre_i = tl.load(proj, mask=mask, other=0.0) + _recurrent_block(
            h_prev_ptr, stride_hpb, w_ptr, hidden, rows, row_mask, units, unit_mask, 0, BLOCK_B, BLOCK_H, BLOCK_K)
        pre_f = tl.load(proj + hidden, mask=mask, other=0.0) + _recurrent_block(
            h_prev_ptr, stride_hpb, w_ptr, hidden, rows, row_mask, units, unit_mask, 1, BLOCK_B, BLOCK_H, BLOCK_K)
        pre_g = tl.load(proj + 2 * hidden, mask=mask, other=0.0) + _recurrent_block(
            h_prev_ptr, stride_hpb, w_ptr, hidden, rows, row_mask, units, unit_mask, 2, BLOCK_B, BLOCK_H, BLOCK_K)
        pre_o = tl.load(proj + 3 * hidden, mask=mask, other=0.0) + _recurrent_block(
            h_prev_ptr, stride_hpb, w_ptr, hidden, rows, row_mask, units, unit_mask, 3, BLOCK_B, BLOCK_H, BLOCK_K)
        i = _sigmoid(pre_i)
        f = _sigmoid(pre_f)
        g = _tanh(pre_g)
        o = _sigmoid(pre_o)
        c_prev = tl.load(c_prev_ptr + rows[:, None] * stride_cpb + units[None, :], mask=mask, other=0.0)
        c = f * c_prev + i * g
        h = o * _tanh(c)
        tl.store(gate_out, i, mask=mask)
        tl.store(gate_out + hidden, f, mask=mask)
        tl.store(gate_out + 2 * hidden, g, mask=mask)
        tl.store(gate_out + 3 * hidden, o, mask=mask)
        state_out = rows[:, None] * stride_sb + units[None, :]
        tl.store(c_ptr + state_out, c, mask=mask)
        tl.store(h_ptr + state_out, h, mask=mask)

    @triton.jit
    def _gru_step_kernel(
        proj_ptr, w_ptr, b_hn_ptr, h_prev_ptr, gates_ptr, h_ptr,
        batch, hidden,
        stride_pb, stride_hpb, stride_gb, stride_sb,
        HAS_B_HN: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        row_mask = rows < batch
        unit_mask = units < hidden
        mask = row_mask[:, None] & unit_mask[None, :]
        proj = proj_ptr + rows[:, None] * stride_pb + units[None, :]
        pre_r = tl.load(proj, mask=mask, other=0.0) + _recurrent_block(
            h_prev_ptr, stride_hpb, w_ptr, hidden, rows, row_mask, units, unit_mask, 0, BLOCK_B, BLOCK_H, BLOCK_K)
        pre_z = tl.load(proj + hidden, mask=mask, other=0.0) + _recurrent_block(
            h_prev_ptr, stride_hpb, w_ptr, hidden, rows, row_mask, units, unit_mask, 1, BLOCK_B, BLOCK_H, BLOCK_K)
        hidden_n = _recurrent_block(
            h_prev_ptr, stride_hpb, w_ptr, hidden, rows, row_mask, units, unit_mask, 2, BLOCK_B, BLOCK_H, BLOCK_K)
        if HAS_B_HN:
            hidden_n += tl.load(b_hn_ptr + units, mask=unit_mask, other=0.0)[None, :]
        r = _sigmoid(pre_r)
        z = _sigmoid(pre_z)
        n = _tanh(tl.load(proj + 2 * hidden, mask=mask, other=0.0) + r * hidden_n)
        h_prev = tl.load(h_prev_ptr + rows[:, None] * stride_hpb + units[None, :], mask=mask, other=0.0)
        h = (1.0 - z) * n + z * h_prev
        gate_out = gates_ptr + rows[:, None] * stride_gb + units[None, :]
        tl.store(gate_out, r, mask=mask)
        tl.store(gate_out + hidden, z, mask=mask)
        tl.store(gate_out + 2 * hidden, n, mask=mask)
        tl.store(h_ptr + rows[:, None] * stride_sb + units[None, :], h, mask=mask)


def _blocks(batch: int, hidden: int) -> tuple[int, int, int]:
    """(BLOCK_B, BLOCK_H, BLOCK_K): tl.dot needs every dimension >= 16; small H gives more programs."""
    block_b = max(16, min(64, triton.next_power_of_2(batch)))
    block_h = 32 if hidden <= 512 else 64
    block_k = max(16, min(64, triton.next_power_of_2(hidden)))
    return block_b, block_h, block_k


def _check(x: Tensor, weight_hh: Tensor, n_gates: int) -> tuple[int, int, int]:
    if triton is None:
        raise RuntimeError("the Triton RNN kernels need Triton (pip install triton)")
    if x.dim() != 3:
        raise ValueError(f"x must be [batch, pos, d_in], got shape {tuple(x.shape)}")
    hidden = weight_hh.shape[1]
    if weight_hh.shape[0] != n_gates * hidden:
        raise ValueError(f"weight_hh must be [{n_gates}H, H], got {tuple(weight_hh.shape)}")
    return x.shape[0], x.shape[1], hidden


def _launch_positions(length: int, launch, capture_graph: bool) -> None:
    """Run launch(t) for t = 0..length-1, optionally recorded once as a CUDA graph and replayed."""
    if not capture_graph:
        for t in range(length):
            launch(t)
        return
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        launch(0)  # compiles the kernel outside capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for t in range(length):
            launch(t)
    graph.replay()


@torch.no_grad()
def triton_lstm_forward_recording(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    capture_graph: bool = False,
) -> dict[str, Tensor]:
    """LSTM over every position with every gate written; same contract as `lstm_forward_recording`.

    x: [batch, pos, d_in]; h0, c0: [batch, H]; weight_ih: [4H, d_in]; weight_hh: [4H, H]; biases
    [4H] or None. Returns {"i", "f", "g", "o", "c", "h"}, each [batch, pos, H] (the gates are
    column slices of one [batch, pos, 4H] buffer). Computed in float32.
    """
    batch, length, hidden = _check(x, weight_hh, 4)
    dtype = torch.float32
    proj = torch.nn.functional.linear(x.to(dtype), weight_ih.to(dtype))  # [batch, pos, 4H]
    bias = sum(b.to(dtype) for b in (bias_ih, bias_hh) if b is not None)
    if not isinstance(bias, int):
        proj += bias
    w_hh = weight_hh.to(dtype).contiguous()  # [4H, H]
    gates = x.new_empty(batch, length, 4 * hidden, dtype=dtype)  # [batch, pos, 4H]
    cells = x.new_empty(batch, length, hidden, dtype=dtype)  # [batch, pos, H]
    hiddens = torch.empty_like(cells)
    h0 = h0.to(dtype).contiguous()  # [batch, H]
    c0 = c0.to(dtype).contiguous()
    block_b, block_h, block_k = _blocks(batch, hidden)
    grid = (triton.cdiv(batch, block_b), triton.cdiv(hidden, block_h))

    def launch(t: int) -> None:
        h_prev = h0 if t == 0 else hiddens[:, t - 1]  # [batch, H], row stride pos * H
        c_prev = c0 if t == 0 else cells[:, t - 1]
        _lstm_step_kernel[grid](
            proj[:, t], w_hh, h_prev, c_prev, gates[:, t], cells[:, t], hiddens[:, t],
            batch, hidden,
            proj.stride(0), h_prev.stride(0), c_prev.stride(0), gates.stride(0), cells.stride(0),
            BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
        )  # fmt: skip

    if length:
        _launch_positions(length, launch, capture_graph and x.is_cuda)
    i, f, g, o = gates.split(hidden, dim=-1)
    return {"i": i, "f": f, "g": g, "o": o, "c": cells, "h": hiddens}


@torch.no_grad()
def triton_gru_forward_recording(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    capture_graph: bool = False,
) -> dict[str, Tensor]:
    """GRU over every position with every gate written; same contract as `gru_forward_recording`.

    x: [batch, pos, d_in]; h0: [batch, H]; weight_ih: [3H, d_in]; weight_hh: [3H, H]; biases [3H]
    or None. Returns {"r", "z", "n", "h"}, each [batch, pos, H]. Computed in float32.
    """
    batch, length, hidden = _check(x, weight_hh, 3)
    dtype = torch.float32
    proj = torch.nn.functional.linear(x.to(dtype), weight_ih.to(dtype))  # [batch, pos, 3H]
    if bias_ih is not None:
        proj += bias_ih.to(dtype)
    b_hn = None
    if bias_hh is not None:  # b_hr, b_hz add to the pre-activations; b_hn sits inside r * (...)
        proj[..., : 2 * hidden] += bias_hh[: 2 * hidden].to(dtype)
        b_hn = bias_hh[2 * hidden :].to(dtype).contiguous()  # [H]
    w_hh = weight_hh.to(dtype).contiguous()  # [3H, H]
    gates = x.new_empty(batch, length, 3 * hidden, dtype=dtype)  # [batch, pos, 3H]
    hiddens = x.new_empty(batch, length, hidden, dtype=dtype)  # [batch, pos, H]
    h0 = h0.to(dtype).contiguous()
    block_b, block_h, block_k = _blocks(batch, hidden)
    grid = (triton.cdiv(batch, block_b), triton.cdiv(hidden, block_h))

    def launch(t: int) -> None:
        h_prev = h0 if t == 0 else hiddens[:, t - 1]
        _gru_step_kernel[grid](
            proj[:, t], w_hh, b_hn if b_hn is not None else w_hh, h_prev, gates[:, t], hiddens[:, t],
            batch, hidden,
            proj.stride(0), h_prev.stride(0), gates.stride(0), hiddens.stride(0),
            HAS_B_HN=b_hn is not None, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
        )  # fmt: skip

    if length:
        _launch_positions(length, launch, capture_graph and x.is_cuda)
    r, z, n = gates.split(hidden, dim=-1)
    return {"r": r, "z": z, "n": n, "h": hiddens}
