"""Log-space scans for positive linear recurrences, as used by minGRU and minLSTM.

Heinsen 2023, "Efficient Parallelization of a Ubiquitous Sequential Computation": for
h_t = a_t h_{t-1} + b_t with a, b, h0 > 0,

    log h_t = a*_t + logcumsumexp_{s <= t}(log b_s - a*_s),   a*_t = sum_{s <= t} log a_s,

which Feng et al. 2024 ("Were RNNs All We Needed?") use to train minGRU/minLSTM in parallel.
The absolute rounding error of that closed form grows with |a*_t|, i.e. linearly with the
sequence length, so both scans here reset a* at every chunk (as Mamba2's segsum does) and carry
the chunk-entering states across chunks in log space; the error then depends on the chunk, not pos.

- `log_space_scan` (the fast path): inside each chunk it runs the recurrence step by step in the
  (logaddexp, +) semiring, vectorised over all chunks, so it matches the reference to a few ulp
  whatever the range of log a; on CPU it is also faster than the closed form.
- `log_space_scan_heinsen`: Heinsen's closed form inside each chunk (cumsum + logcumsumexp, no
  loop over positions in a chunk): fewer sequential steps, relative error ~ eps * chunk_size *
  max|log a|.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .linear_scan import default_chunk_size, runs_in_place_sequentially

__all__ = ["g", "log_g", "log_space_scan", "log_space_scan_heinsen", "log_space_scan_reference"]


def g(x: Tensor) -> Tensor:
    """minGRU's positive activation g(x) = x + 0.5 if x >= 0 else sigmoid(x) (Feng et al. 2024,
    Appendix B), continuous at 0 with value 0.5, so h_tilde = g(.) > 0 can be scanned in log space."""
    return torch.where(x >= 0, torch.relu(x) + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """log g(x), stably: log(x + 0.5) for x >= 0, -softplus(-x) = log sigmoid(x) for x < 0.

    Both branches are finite for every x (relu keeps the log's argument >= 0.5), so torch.where
    gives finite gradients everywhere.
    """
    return torch.where(x >= 0, torch.log(torch.relu(x) + 0.5), -F.softplus(-x))


def _log_inputs(log_a: Tensor, log_b: Tensor, log_h0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    shape = torch.broadcast_shapes(log_a.shape, log_b.shape)
    if len(shape) < 2:
        raise ValueError(f"need [batch, pos, *state] shapes, got {log_a.shape} and {log_b.shape}")
    dtype = torch.promote_types(log_a.dtype, log_b.dtype)
    if log_h0 is not None:
        dtype = torch.promote_types(dtype, log_h0.dtype)
    log_a = log_a.to(dtype).expand(shape)
    log_b = log_b.to(dtype).expand(shape)
    if log_h0 is not None:
        log_h0 = log_h0.to(dtype).expand(shape[0], *shape[2:])
    return log_a, log_b, log_h0


def log_space_scan_reference(log_a: Tensor, log_b: Tensor, log_h0: Tensor | None = None) -> Tensor:
    """Step-by-step log h_t = logaddexp(log a_t + log h_{t-1}, log b_t), from h_{-1} = h0 (0 if None).

    log_a, log_b: [batch, pos, *state]; log_h0: [batch, *state] or None. Returns h = exp(log h):
    [batch, pos, *state].
    """
    log_a, log_b, log_h = _log_inputs(log_a, log_b, log_h0)
    hs = []
    for t in range(log_b.shape[1]):
        if log_h is None:
            log_h = log_b[:, t]  # [batch, *state]
        else:
            log_h = torch.logaddexp(log_a[:, t] + log_h, log_b[:, t])
        hs.append(log_h)
    return torch.stack(hs, dim=1).exp() if hs else log_b.new_empty(log_b.shape)  # [batch, pos, *state]


def _log_chunks(log_a: Tensor, log_b: Tensor, chunk_size: int) -> tuple[Tensor, Tensor, int]:
    """[batch, pos, *state] -> [batch, chunk, t, *state], padding the end with a = 1, b = 0."""
    batch, pos = log_b.shape[:2]
    state = log_b.shape[2:]
    n_chunks = -(-pos // chunk_size)
    pad = n_chunks * chunk_size - pos
    if pad:  # log a = 0, log b = -inf: the padded states are dropped
        log_a = torch.cat([log_a, log_a.new_zeros(batch, pad, *state)], dim=1)
        log_b = torch.cat([log_b, log_b.new_full((batch, pad, *state), -torch.inf)], dim=1)
    log_a = log_a.reshape(batch, n_chunks, chunk_size, *state)  # [batch, chunk, t, *state]
    log_b = log_b.reshape(batch, n_chunks, chunk_size, *state)  # [batch, chunk, t, *state]
    return log_a, log_b, pad


def _carry(log_a_chunk: Tensor, log_last: Tensor, log_h0: Tensor) -> Tensor:
    """log of the state entering every chunk: log H_k = logaddexp(A_k + log H_{k-1}, log h_k),
    with A_k = sum of log a over chunk k and h_k its final state from zero; given the first
    chunk - 1 of them, returns [batch, chunk, *state]."""
    entering = [log_h0]
    for k in range(log_last.shape[1]):
        entering.append(torch.logaddexp(log_a_chunk[:, k] + entering[-1], log_last[:, k]))
    return torch.stack(entering, dim=1)


def log_space_scan(
    log_a: Tensor, log_b: Tensor, log_h0: Tensor | None = None, chunk_size: int | None = None
) -> Tensor:
    """Chunked log-space scan of h_t = a_t h_{t-1} + b_t (a, b, h0 > 0), reset per chunk.

    1. every chunk (but the last) runs log h = logaddexp(log a_t + log h, log b_t) from h = 0,
       all chunks at once, keeping only its final state; log A_k = sum of log a over the chunk;
    2. the entering states are carried across chunks in log space (Heinsen's recurrence on
       chunks): log H_k = logaddexp(log A_k + log H_{k-1}, log h_k);
    3. every chunk runs again from its entering state, writing log h, then h = exp(log h).
    2 * chunk_size + pos / chunk_size Python steps. On CPU without grad, steps wider than
    SEQUENTIAL_WIDTH elements are taken one position at a time in place instead (measured faster:
    the chunked form evaluates logaddexp twice per element). Measured against `log_space_scan_reference`
    on minGRU-like inputs (pos 4096, and log a down to -200): relative error < 1e-6 float32,
    < 1e-14 float64.

    log_a, log_b: [batch, pos, *state] (broadcastable to each other); log_h0: [batch, *state] or
    None (h0 = 0); chunk_size: None picks `default_chunk_size(pos)`.
    Returns h (not log h): [batch, pos, *state].
    """
    log_a, log_b, log_h0 = _log_inputs(log_a, log_b, log_h0)
    batch, pos = log_b.shape[:2]
    state = log_b.shape[2:]
    chunk_size = default_chunk_size(pos) if chunk_size is None else chunk_size
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    track_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (log_a, log_b, log_h0)
    )
    if pos // chunk_size < 2 or runs_in_place_sequentially(log_b, track_grad):
        if track_grad:
            return log_space_scan_reference(log_a, log_b, log_h0)
        h = log_b.new_empty(log_b.shape)  # log h, then h: [batch, pos, *state]
        log_h = log_h0
        for t in range(pos):
            if log_h is None:
                log_h = h[:, 0].copy_(log_b[:, 0])
            else:
                log_h = torch.logaddexp(log_a[:, t] + log_h, log_b[:, t], out=h[:, t])
        return h.exp_()
    if log_h0 is None:
        log_h0 = log_b.new_full((batch, *state), -torch.inf)
    log_a, log_b, pad = _log_chunks(log_a, log_b, chunk_size)  # [batch, chunk, t, *state]
    n_chunks = log_a.shape[1]

    # 1. final state of every chunk but the last, each from h = 0
    log_h = log_b[:, :-1, 0]  # [batch, chunk - 1, *state]
    for t in range(1, chunk_size):
        log_h = torch.logaddexp(log_a[:, :-1, t] + log_h, log_b[:, :-1, t])
    log_a_chunk = log_a[:, :-1].sum(dim=2)  # [batch, chunk - 1, *state]

    # 2. state entering every chunk
    log_h = _carry(log_a_chunk, log_h, log_h0)  # [batch, chunk, *state]

    # 3. every chunk again from its entering state
    if track_grad:
        steps = []
        for t in range(chunk_size):
            log_h = torch.logaddexp(log_a[:, :, t] + log_h, log_b[:, :, t])
            steps.append(log_h)
        h = torch.stack(steps, dim=2).exp()  # [batch, chunk, t, *state]
    else:
        h = torch.empty_like(log_b)  # [batch, chunk, t, *state]
        for t in range(chunk_size):
            log_h = torch.logaddexp(log_a[:, :, t] + log_h, log_b[:, :, t], out=h[:, :, t])
        h.exp_()
    h = h.reshape(batch, n_chunks * chunk_size, *state)
    return h[:, :pos] if pad else h


def log_space_scan_heinsen(
    log_a: Tensor, log_b: Tensor, log_h0: Tensor | None = None, chunk_size: int = 16
) -> Tensor:
    """Heinsen's closed form inside every chunk, carried across chunks in log space.

    Inside each chunk (all chunks at once): a*_t = cumsum(log a) and
    log h_local_t = a*_t + logcumsumexp(log b - a*)_t; across chunks the entering state is carried,
    log H_k = logaddexp(a*_{k,end} + log H_{k-1}, log h_local_{k,end}); finally
    log h_t = logaddexp(log h_local_t, a*_t + log H_{k-1}). Only pos / chunk_size sequential
    steps, but the rounding error in log h (the relative error in h) is about
    eps * chunk_size * max|log a|: on minGRU-like inputs in float32, 3e-6 at chunk_size 8,
    5e-6 at 16, 7e-6 at 32, 1.4e-5 at 64. On a 2-core CPU it is slower than `log_space_scan`.

    log_a, log_b: [batch, pos, *state]; log_h0: [batch, *state] or None (h0 = 0).
    Returns h (not log h): [batch, pos, *state].
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    log_a, log_b, log_h0 = _log_inputs(log_a, log_b, log_h0)
    batch, pos = log_b.shape[:2]
    state = log_b.shape[2:]
    chunk_size = min(chunk_size, pos)
    if log_h0 is None:
        log_h0 = log_b.new_full((batch, *state), -torch.inf)
    log_a, log_b, pad = _log_chunks(log_a, log_b, chunk_size)  # [batch, chunk, t, *state]
    n_chunks = log_a.shape[1]

    # 1. Heinsen inside every chunk, from a zero entering state
    a_star = torch.cumsum(log_a, dim=2)  # [batch, chunk, t, *state], log prod of a in the chunk
    log_h_local = a_star + torch.logcumsumexp(log_b - a_star, dim=2)  # [batch, chunk, t, *state]

    # 2. state entering every chunk, 3. add what survives of it
    log_h_in = _carry(a_star[:, :-1, -1], log_h_local[:, :-1, -1], log_h0)  # [batch, chunk, *state]
    log_h = torch.logaddexp(log_h_local, a_star + log_h_in.unsqueeze(2))
    h = log_h.exp().reshape(batch, n_chunks * chunk_size, *state)
    return h[:, :pos] if pad else h
