"""LSTM and GRU forwards that write every gate as they go, for recording on CPU without autograd.

Gate recovery after the library kernel (`rnn_gates`) repeats the library's two large matmuls, so
recording that way costs about three plain forwards. These loops do the library's own work once:
one matmul for the input projection of every position, then per position one recurrent matmul and
in-place gate nonlinearities written straight into preallocated `[pos, batch, ...]` buffers, which
are the recorded tensors themselves (no copy, no stack).

Where it pays (measured in benchmarks/bench_cpu.py), the recurrent matmul h_{t-1} W_hh^T runs
through oneDNN with W_hh reordered once into oneDNN's blocked layout (`StepMatmul`), which is what
torch.nn.LSTM's own oneDNN kernel does internally; a per-step `addmm` re-reads the unpacked weight
every step. Gate rows are permuted once so that one sigmoid covers i, f, o together. Forward-only
(in-place writes): callers use gate recovery when gradients are needed.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .buffers import recording_buffer

__all__ = [
    "StepMatmul",
    "elman_forward_recording",
    "gru_forward_recording",
    "lstm_forward_recording",
    "onednn_step_matmul_available",
]


@functools.cache
def onednn_step_matmul_available() -> bool:
    """True where torch ships oneDNN's linear with prepacked weights and it agrees with `addmm`.

    These are the ops torch.compile's CPU backend uses (`torch.ops.mkldnn._reorder_linear_weight`,
    `_linear_pointwise`); they are private, so their presence and their numbers are checked once per
    process on a small product before any recording relies on them.
    """
    ops = getattr(torch.ops, "mkldnn", None)
    if ops is None or not torch.backends.mkldnn.is_available() or not torch.backends.mkldnn.enabled:
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(24, 8, generator=gen)  # [out, in]
        h = torch.randn(3, 8, generator=gen)  # [batch, in]
        other = torch.randn(3, 24, generator=gen)  # [batch, out]
        packed = ops._reorder_linear_weight(weight, 3)  # noqa: SLF001 (torch private op, probed above)
        got = ops._linear_pointwise.binary(h, other, packed, None, "add")  # noqa: SLF001 (torch private op, probed above)
        return bool(torch.allclose(got, torch.addmm(other, h, weight.T), rtol=1e-5, atol=1e-5))
    except (AttributeError, RuntimeError, TypeError):
        return False


class StepMatmul:
    """`h @ weight.T + bias` or `other + h @ weight.T` for one fixed weight, once per position.

    On CPU in float32 with oneDNN available the weight is reordered once into oneDNN's layout for
    this batch size; otherwise `torch.addmm`. `backend` names the one in use (for cache metadata).
    weight: [out, in]; bias: [out] or None; h: [batch, in]; other: [batch, out].
    """

    def __init__(self, weight: Tensor, batch: int, bias: Tensor | None = None):
        weight = weight.detach()
        self.weight_t = weight.T  # [in, out]
        self.bias = None if bias is None else bias.detach()
        self.packed: Tensor | None = None
        if weight.device.type == "cpu" and weight.dtype == torch.float32 and onednn_step_matmul_available():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch)  # noqa: SLF001 (torch private op, probed above)
        self.backend = "oneDNN packed matmul" if self.packed is not None else "torch.addmm"

    def __call__(self, h: Tensor, other: Tensor | None = None) -> Tensor:
        """[batch, out]: with `other`, other + h W^T (bias ignored; with addmm, `other` updated in
        place and returned); without, h W^T + bias in a new tensor."""
        if self.packed is not None:
            if other is not None:
                return torch.ops.mkldnn._linear_pointwise.binary(h, other, self.packed, None, "add")  # noqa: SLF001 (torch private op, probed above)
            return torch.ops.mkldnn._linear_pointwise(h, self.packed, self.bias, "none", [], "")  # noqa: SLF001 (torch private op, probed above)
        if other is not None:
            return other.addmm_(h, self.weight_t)
        return h @ self.weight_t if self.bias is None else torch.addmm(self.bias, h, self.weight_t)


def _bias(*biases: Tensor | None) -> Tensor | None:
    present = [b for b in biases if b is not None]
    if not present:
        return None
    return functools.reduce(torch.add, present)


def _input_projection(x: Tensor, weight_ih: Tensor, bias: Tensor | None) -> Tensor:
    """W_ih x_t + bias for every position, in x's own batch-major layout: [batch, pos, rows],
    written into a `recording_buffer` (it becomes the recorded gates)."""
    batch, length, d_in = x.shape
    out = recording_buffer((batch, length, weight_ih.shape[0]), x.dtype, x.device)
    flat = x.reshape(-1, d_in)  # [batch * pos, d_in]
    if bias is None:
        torch.mm(flat, weight_ih.T, out=out.view(-1, weight_ih.shape[0]))
    else:
        torch.addmm(bias, flat, weight_ih.T, out=out.view(-1, weight_ih.shape[0]))
    return out


def _tanh_via_sigmoid_(pre_doubled: Tensor, two: Tensor, one: Tensor) -> Tensor:
    """tanh(v) = 2 sigmoid(2 v) - 1, in place on 2 v (abs. error < 2e-7 in float32).

    torch's CPU tanh is several times slower than its sigmoid on [batch, H] rows, and the recurrent
    loop needs it twice per position. `two` and `one` are 0-dim tensors of the data's dtype: a
    Python scalar costs more per op (benchmarks/cpu_results.md, "Choices measured")."""
    return pre_doubled.sigmoid_().mul_(two).sub_(one)


def lstm_forward_recording(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> dict[str, Tensor]:
    """LSTM (PyTorch's equations and weight layout, gate rows i, f, g, o) over every position.

    x: [batch, pos, d_in]; h0, c0: [batch, H]; weight_ih: [4H, d_in]; weight_hh: [4H, H];
    biases: [4H] or None. Returns {"i", "f", "g", "o", "c", "h"}, each [batch, pos, H] (column
    slices of one [batch, pos, 4H] buffer for the gates). The recurrent matmul's backend is
    `StepMatmul(weight_hh, batch).backend`.
    """
    batch, length, _ = x.shape
    hidden = weight_hh.shape[1]
    with torch.no_grad():
        # g's rows doubled (exact in floating point): one sigmoid over all 4H columns gives i, f, o
        # and sigmoid(2 g_pre), from which g = tanh(g_pre) = 2 sigmoid(2 g_pre) - 1
        scale = x.new_ones(4 * hidden, 1)
        scale[2 * hidden : 3 * hidden] = 2
        bias = _bias(bias_ih, bias_hh)
        gates = _input_projection(x, weight_ih * scale, None if bias is None else bias * scale[:, 0])
        step_matmul = StepMatmul(weight_hh * scale, batch)  # gates: [batch, pos, 4H]
        cells = recording_buffer((batch, length, hidden), x.dtype, x.device)  # [batch, pos, H]
        hiddens = recording_buffer((batch, length, hidden), x.dtype, x.device)
        h, c = h0.to(x.dtype).contiguous(), c0.to(x.dtype)
        two, one = x.new_tensor(2.0), x.new_tensor(1.0)
        for t in range(length):
            gate = gates[:, t]  # [batch, 4H]
            torch.sigmoid(step_matmul(h, gate), out=gate)  # i, f, sigmoid(2 g_pre), o
            i, f, g, o = gate.split(hidden, dim=1)
            g.mul_(two).sub_(one)  # g = tanh(g_pre)
            c = torch.mul(f, c, out=cells[:, t]).addcmul_(i, g)  # c_t = f c_{t-1} + i g
            h = _tanh_via_sigmoid_(torch.mul(c, two, out=hiddens[:, t]), two, one).mul_(o)  # o tanh(c_t)
    quarters = {name: gates[..., k * hidden : (k + 1) * hidden] for k, name in enumerate("ifgo")}
    return {**quarters, "c": cells, "h": hiddens}


def gru_forward_recording(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> dict[str, Tensor]:
    """GRU in PyTorch's convention over x [batch, pos, d_in] from h0 [batch, H].

    r, z = σ(W_i· x + b_i· + W_h· h + b_h·); n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn));
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1} = lerp(n, h_{t−1}, z). Returns {"r", "z", "n", "h"}, each
    [batch, pos, H] (r, z, n: column slices of one [batch, pos, 3H] buffer).
    """
    batch, length, _ = x.shape
    hidden = weight_hh.shape[1]
    with torch.no_grad():
        inputs = _input_projection(x, weight_ih, bias_ih)  # [batch, pos, 3H]; becomes r, z, n
        step_matmul = StepMatmul(weight_hh, batch, bias_hh)
        hiddens = recording_buffer((batch, length, hidden), x.dtype, x.device)  # [batch, pos, H]
        h = h0.to(x.dtype)
        for t in range(length):
            gate, hidden_t = inputs[:, t], hiddens[:, t]  # [batch, 3H], [batch, H]
            from_h = step_matmul(h)  # [batch, 3H]: W_h· h_{t-1} + b_h·
            rz = gate[:, : 2 * hidden]
            torch.add(rz, from_h[:, : 2 * hidden], out=rz).sigmoid_()
            r, z, n = gate.split(hidden, dim=1)
            n.addcmul_(r, from_h[:, 2 * hidden :]).tanh_()
            h = torch.lerp(n, h, z, out=hidden_t)  # n + z (h_{t-1} - n)
    thirds = {name: inputs[..., k * hidden : (k + 1) * hidden] for k, name in enumerate("rzn")}
    return {**thirds, "h": hiddens}


def elman_forward_recording(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> dict[str, Tensor]:
    """Elman RNN (torch.nn.RNN, tanh) over x [batch, pos, d_in] from h0 [batch, H]:
    pre_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, h_t = tanh(pre_t).
    Returns {"pre", "h"}, each [batch, pos, H]."""
    batch, length, _ = x.shape
    hidden = weight_hh.shape[1]
    with torch.no_grad():
        pres = _input_projection(x, weight_ih, _bias(bias_ih, bias_hh))  # [batch, pos, H]
        step_matmul = StepMatmul(weight_hh, batch)
        hiddens = recording_buffer((batch, length, hidden), x.dtype, x.device)  # [batch, pos, H]
        h = h0.to(x.dtype).contiguous()
        two, one = x.new_tensor(2.0), x.new_tensor(1.0)
        for t in range(length):
            pre = pres[:, t]  # [batch, H]
            pre.copy_(step_matmul(h, pre))  # a no-op copy on the addmm path (in place already)
            h = _tanh_via_sigmoid_(torch.mul(pre, two, out=hiddens[:, t]), two, one)
    return {"pre": pres, "h": hiddens}
