"""Log-space parallel scan for positive linear recurrences, as used by minGRU and minLSTM.

Heinsen 2023, "Efficient Parallelization of a Ubiquitous Sequential Computation": for
h_t = a_t h_{t-1} + b_t with a, b, h0 > 0,

    log h_t = a*_t + logcumsumexp_{s <= t}(log b_s - a*_s),   a*_t = sum_{s <= t} log a_s,

which Feng et al. 2024 ("Were RNNs All We Needed?") use to train minGRU/minLSTM in parallel.
The absolute rounding error of that formula grows with |a*_t|, i.e. linearly with the sequence
length, so `log_space_scan` resets a* at every chunk (as Mamba2's segsum does) and carries the
chunk-final states across chunks in log space; the error then depends on chunk_size, not on pos.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["g", "log_g", "log_space_scan", "log_space_scan_reference"]


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
    return torch.stack(hs, dim=1).exp()  # [batch, pos, *state]


def log_space_scan(
    log_a: Tensor, log_b: Tensor, log_h0: Tensor | None = None, chunk_size: int = 32
) -> Tensor:
    """Heinsen's parallel log-space scan of h_t = a_t h_{t-1} + b_t (a, b, h0 > 0), reset per chunk.

    Inside each chunk (all chunks at once): a*_t = cumsum(log a) and
    log h_local_t = a*_t + logcumsumexp(log b - a*)_t; across chunks the entering state is carried
    in log space, log H_k = logaddexp(a*_{k,end} + log H_{k-1}, log h_local_{k,end}); finally
    log h_t = logaddexp(log h_local_t, a*_t + log H_{k-1}). The rounding error in log h (hence the
    relative error in h) is about eps * chunk_size * max|log a| + a few eps, independent of pos.

    log_a, log_b: [batch, pos, *state] (broadcastable to each other); log_h0: [batch, *state] or
    None (h0 = 0). Returns h (not log h): [batch, pos, *state].
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    log_a, log_b, log_h0 = _log_inputs(log_a, log_b, log_h0)
    batch, pos = log_b.shape[:2]
    state = log_b.shape[2:]
    n_chunks = -(-pos // chunk_size)
    size = min(chunk_size, pos)
    pad = n_chunks * size - pos
    if pad:  # pad the end with a = 1 (log 0), b = 0 (log -inf); the padded states are dropped
        log_a = torch.cat([log_a, log_a.new_zeros(batch, pad, *state)], dim=1)
        log_b = torch.cat([log_b, log_b.new_full((batch, pad, *state), -torch.inf)], dim=1)
    log_a = log_a.reshape(batch, n_chunks, size, *state)  # [batch, chunk, t, *state]
    log_b = log_b.reshape(batch, n_chunks, size, *state)  # [batch, chunk, t, *state]

    # 1. Heinsen inside every chunk, from a zero entering state
    a_star = torch.cumsum(log_a, dim=2)  # [batch, chunk, t, *state], log prod of a since chunk start
    log_h_local = a_star + torch.logcumsumexp(log_b - a_star, dim=2)  # [batch, chunk, t, *state]

    # 2. carry the entering state across chunks, in log space
    a_chunk = a_star[:, :, -1]  # [batch, chunk, *state]
    last = log_h_local[:, :, -1]  # [batch, chunk, *state]
    if log_h0 is None:
        log_h0 = torch.full_like(last[:, 0], -torch.inf)
    carry = [log_h0]  # log of the state entering each chunk
    for k in range(n_chunks - 1):
        carry.append(torch.logaddexp(a_chunk[:, k] + carry[-1], last[:, k]))
    log_h_in = torch.stack(carry, dim=1).unsqueeze(2)  # [batch, chunk, 1, *state]

    # 3. add what survives of the entering state
    log_h = torch.logaddexp(log_h_local, a_star + log_h_in)  # [batch, chunk, t, *state]
    h = log_h.exp().reshape(batch, n_chunks * size, *state)
    return h[:, :pos] if pad else h
