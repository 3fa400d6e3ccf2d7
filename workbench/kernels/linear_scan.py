"""Chunked parallel scan for the first-order linear recurrence h_t = a_t * h_{t-1} + b_t.

Every gated linear RNN (S6/Mamba, RG-LRU, minGRU, an LSTM's cell state given its gates) is this
recurrence with element-wise coefficients (Martin & Cundy 2018, "Parallelizing Linear Recurrent
Neural Nets Over Sequence Length"; Blelloch 1990, "Prefix Sums and Their Applications").

`linear_scan_reference` is the loop, one line per step, and the oracle. `linear_scan` is the fast
path: the sequence is cut into chunks; every chunk is scanned at once (sequential inside a chunk,
vectorised across chunks) to get its final state, those are carried across chunk boundaries, and
every chunk is scanned again from its true entering state. It never divides by a product of `a`,
so it stays exact when those products underflow to zero (tiny `a`), where closed forms such as
`cumprod(a) * cumsum(b / cumprod(a))` produce inf/nan.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .buffers import recording_buffer

__all__ = ["SEQUENTIAL_WIDTH", "default_chunk_size", "linear_scan", "linear_scan_reference"]

# From this many elements per position (batch * prod(state)) a CPU step is wide enough that Python
# overhead no longer dominates: the chunked scan's extra pass over the data then costs more than
# the loop it saves, so without autograd the CPU path steps through positions writing in place.
SEQUENTIAL_WIDTH = 1 << 13


def runs_in_place_sequentially(b: Tensor, track_grad: bool) -> bool:
    """True where stepping through positions in place beats the chunked scan (wide, CPU, no grad)."""
    width = b.numel() // max(1, b.shape[1])
    return not track_grad and b.device.type == "cpu" and width >= SEQUENTIAL_WIDTH


def default_chunk_size(pos: int) -> int:
    """A power of two near sqrt(pos / 2), which minimises the 2 * chunk + pos / chunk sequential
    steps of a two-pass chunked scan (16 for pos = 1024, 32 for 4096)."""
    return 1 << max(1, int(math.log2(math.sqrt(max(pos, 2) / 2))))


def _broadcast_inputs(a: Tensor, b: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Broadcast `a` and `b` to one [batch, pos, *state] shape (a only in batch and pos if it can
    keep its own state dims), promote to a common floating dtype, and build h0 (zeros if None)."""
    shape = torch.broadcast_shapes(a.shape, b.shape)
    if len(shape) < 2:
        raise ValueError(f"a and b need [batch, pos, *state] shapes, got {a.shape} and {b.shape}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    if not dtype.is_floating_point and not dtype.is_complex:
        dtype = torch.get_default_dtype()
    b = b.to(dtype).expand(shape)
    if a.dim() == len(shape):
        # keep a's own (possibly singleton) state dims: a cheaper chunk product; broadcasting does the rest
        a = a.to(dtype).expand(shape[0], shape[1], *a.shape[2:])
    else:
        a = a.to(dtype).expand(shape)
    state_shape = (shape[0], *shape[2:])
    if h0 is None:
        h0 = torch.zeros(state_shape, dtype=dtype, device=b.device)
    else:
        h0 = h0.to(dtype).expand(state_shape)
    return a, b, h0


def linear_scan_reference(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """Step-by-step h_t = a_t * h_{t-1} + b_t, t = 0..pos-1, from h_{-1} = h0 (zeros if None).

    a: [batch, pos, *state] (or broadcastable to b), b: [batch, pos, *state], h0: [batch, *state].
    Returns every state h: [batch, pos, *state].
    """
    a, b, h = _broadcast_inputs(a, b, h0)
    hs = []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]  # [batch, *state]
        hs.append(h)
    return torch.stack(hs, dim=1) if hs else b.new_empty(b.shape)  # [batch, pos, *state]


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None, chunk_size: int | None = None) -> Tensor:
    """Chunked parallel scan of h_t = a_t * h_{t-1} + b_t, t = 0..pos-1, from h_{-1} = h0.

    Same numbers as `linear_scan_reference` (float32 ~1e-6 relative, float64 ~1e-15) in
    2 * chunk_size + pos / chunk_size Python steps instead of pos, each on [batch, chunks, *state]:

    1. every chunk (but the last) is scanned from a zero state, all chunks at once, keeping only
       its final state; the product of its a comes from one `prod`;
    2. the states entering the chunks are carried across chunks: H_k = A_k H_{k-1} + h_k (a linear
       recurrence over chunks, so with many chunks it is scanned by `linear_scan` itself);
    3. every chunk is scanned again from its true entering state, writing the output.

    No division and no closed-form product is ever formed, so underflowing products of a are
    harmless. Works on any device and dtype; differentiable (without grad it writes straight into
    the output, with grad it stacks the steps). On CPU without grad, steps wider than
    SEQUENTIAL_WIDTH elements are instead taken one position at a time in place (measured faster
    there: the work, not the Python loop, dominates).

    a: [batch, pos, *state] or broadcastable to b (e.g. [batch, pos, d, 1] with b [batch, pos, d, n]),
    b: [batch, pos, *state], h0: [batch, *state] or None (zeros); chunk_size: None picks
    `default_chunk_size(pos)`. Returns every state h: [batch, pos, *state].
    """
    a, b, h0 = _broadcast_inputs(a, b, h0)
    batch, pos = b.shape[:2]
    state = b.shape[2:]
    chunk_size = default_chunk_size(pos) if chunk_size is None else chunk_size
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    track_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (a, b, h0))
    n_chunks = pos // chunk_size
    if n_chunks < 2 or runs_in_place_sequentially(b, track_grad):
        if track_grad:
            return linear_scan_reference(a, b, h0)
        out = recording_buffer((batch, pos, *state), b.dtype, b.device)
        h = h0
        for t in range(pos):
            h = torch.addcmul(b[:, t], a[:, t], h, out=out[:, t])
        return out
    main = n_chunks * chunk_size  # positions in whole chunks; the rest is scanned step by step

    a_main = a[:, :main].reshape(batch, n_chunks, chunk_size, *a.shape[2:])  # [batch, chunk, t, *sa]
    b_main = b[:, :main].reshape(batch, n_chunks, chunk_size, *state)  # [batch, chunk, t, *state]

    # 1. final state of every chunk but the last, each scanned from zero
    h = b_main[:, :-1, 0]  # [batch, chunk - 1, *state]
    for t in range(1, chunk_size):
        h = torch.addcmul(b_main[:, :-1, t], a_main[:, :-1, t], h)
    a_chunk = a_main[:, :-1].prod(dim=2)  # [batch, chunk - 1, *sa], product of a over each chunk

    # 2. state entering every chunk: H_k = A_k H_{k-1} + h_k, itself a linear recurrence over
    #    chunks: scanned by this function again when there are many chunks (O(chunk * log pos) steps)
    if n_chunks - 1 >= 2 * chunk_size:
        h = torch.cat([h0.unsqueeze(1), linear_scan(a_chunk, h, h0, chunk_size)], dim=1)
    else:
        entering = [h0]
        for k in range(n_chunks - 1):
            entering.append(torch.addcmul(h[:, k], a_chunk[:, k], entering[-1]))
        h = torch.stack(entering, dim=1)  # [batch, chunk, *state]

    # 3. scan every chunk again from its entering state, then the leftover positions
    if track_grad:
        steps = []
        for t in range(chunk_size):
            h = torch.addcmul(b_main[:, :, t], a_main[:, :, t], h)  # [batch, chunk, *state]
            steps.append(h)
        out = torch.stack(steps, dim=2).reshape(batch, main, *state)
        if main == pos:
            return out
        rest = linear_scan_reference(a[:, main:], b[:, main:], h[:, -1])
        return torch.cat([out, rest], dim=1)
    out = recording_buffer((batch, pos, *state), b.dtype, b.device)
    out_main = out[:, :main].view(batch, n_chunks, chunk_size, *state)  # [batch, chunk, t, *state]
    for t in range(chunk_size):
        h = torch.addcmul(b_main[:, :, t], a_main[:, :, t], h, out=out_main[:, :, t])
    h = h[:, -1]  # [batch, *state]
    for t in range(main, pos):
        h = torch.addcmul(b[:, t], a[:, t], h, out=out[:, t])
    return out
