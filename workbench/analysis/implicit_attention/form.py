"""The unified implicit-attention form every family reduces to (Zimerman, Ali & Wolf 2024, eq. 12).

Per channel d, a gated-linear layer's output is

    y = diag(row) · (α + diag(skip)) · diag(col) · (Conv v + offset) + diag(row) · init,

with α the decay matrix of `kernel.decay_attention`, `skip` a diagonal term (Mamba's D), `col` and
`row` data-dependent diagonal gates (SiLU's σ(c_j), the output gate), `Conv` a causal depthwise
convolution of the value v (Mamba's conv1d), `offset` its input-independent part (conv bias and
initial conv state) and `init` the initial state's contribution. So y = Ã v + bias with

    Ã    = diag(row) (α + diag(skip)) diag(col) Conv,
    bias = diag(row) [(α + diag(skip)) (col ⊙ offset) + init].

A family module fills a `LinearForm` from a cache; this module composes maps, rows and bias
terms for any family. Mamba2 fills it with one scalar decay per head (`log_decay` [b, H, L, 1],
C and B per head, `head_index` naming each channel's head), so α is computed once per head as the
SSD matrix (C Bᵀ) ⊙ exp(segsum), chunked (`kernel.scalar_decay_attention`), and shared by the
head's channels. RWKV's ratio (wkv = num/den) has its own form in `rwkv.WKVForm` with the same
methods.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.analysis.implicit_attention.kernel import (
    DEFAULT_CHUNK,
    decay_attention,
    decay_attention_row,
    decay_attention_work_bytes,
    initial_state_term,
    scalar_decay_attention,
    scalar_decay_work_bytes,
)

__all__ = ["LinearForm", "compose_work_bytes"]

COMPOSE_BLOCK_BYTES = 2 << 20  # query rows composed at a time: about this many bytes of the map (fits in cache)


def compose_work_bytes(lead: int, queries: int, L: int, n: int, element: int, *, conv: bool = True,
                       initial_state: bool = True, broadcast: bool = False) -> int:
    """Peak bytes one chunk of `lead` = batch × channels maps of `queries` rows needs besides the
    kernel's (whose estimate counts the map itself), an upper bound: the chunk's operands picked out
    of the form, a full copy of α when α is broadcast over batch or channels (`LinearForm.compose`
    writes in place), compose's block of rows (the conv's output, at most `COMPOSE_BLOCK_BYTES` or one
    row), the initial state's term and the bias."""
    operands = 3 * L * n + 6 * L + n  # log_decay, C, B; value, output, skip, col, row, conv offset; state
    clone = queries * L if broadcast else 0
    rows = max(1, min(queries, COMPOSE_BLOCK_BYTES // max(1, lead * L * element)))
    block = rows * (L + 4) if conv else 4 * rows  # conv output; gathered skips and gates
    initial = 4 * L * n + 2 * L if initial_state else 0  # operands per channel, their products, the term
    bias = 5 * queries  # bias, its rows of the initial term and row gate, their products
    return element * lead * (operands + clone + block + initial + bias)


@dataclass
class LinearForm:
    """One layer's recorded operands in the unified form (shapes: b batch, d channels, L pos)."""

    log_decay: Tensor  # [b, d, L, n] (or [b, d, L, 1]: one scalar decay), ≤ 0: log of the per-step decay
    C: Tensor  # broadcastable to [b, d, L, n]: read-out of the state
    B: Tensor  # broadcastable to [b, d, L, n]: write of the value into the state
    value: Tensor  # [b, d, L]: the v that Ã multiplies
    output: Tensor  # [b, d, L]: the recorded output Ã v + bias reproduces
    value_name: str  # where v comes from, e.g. "blocks.0.mixer.hook_x"
    output_name: str  # what the output is, e.g. "hook_y * hook_gate"
    skip: Tensor | None = None  # [b, d, L]: diagonal term (Mamba's D; RWKV's bonus)
    col_scale: Tensor | None = None  # [b, d, L]: gate on the key side (σ(c_j) of SiLU)
    row_scale: Tensor | None = None  # [b, d, L]: gate on the query side (SiLU(z_t))
    conv_weight: Tensor | None = None  # [d, k]: causal depthwise conv applied to v
    conv_offset: Tensor | None = None  # [b, d, L]: conv bias + initial conv state contribution
    initial_state: Tensor | None = None  # [b, d, n]: s_{−1}
    projection: Tensor | None = None  # [d_model, d]: the map from these channels to the residual
    head_index: Tensor | None = None  # [d]: row of log_decay, C, B (axis 1) serving each channel (Mamba2)

    @property
    def shape(self) -> tuple[int, int, int]:
        b, d, L = self.value.shape
        return b, d, L

    @property
    def n(self) -> int:
        """State entries per channel (d_state; 1 for the scalar-state families)."""
        return max(self.log_decay.shape[-1], self.C.shape[-1], self.B.shape[-1])

    @property
    def scalar_decay(self) -> bool:
        """One decay per step shared by all n state entries (Mamba2): the SSD kernel applies."""
        return self.log_decay.shape[-1] == 1 and self.n > 1

    def work_bytes(self, lead: int, queries: int, chunk: int | None = DEFAULT_CHUNK) -> int:
        """Peak bytes of `core` for `lead` = batch × channels maps of `queries` rows (estimated)."""
        element, L, n = self.value.element_size(), self.shape[2], self.n
        if queries != L:
            return element * lead * queries * L * (3 * n + 1)
        spread = 0
        if self.head_index is not None:  # the kernel runs on the heads in use, then α is spread over channels
            b = self.shape[0]
            heads = max(x.shape[1] for x in (self.log_decay, self.C, self.B))
            spread, lead = element * lead * L * L, b * min(heads, max(1, lead // b))
        if self.scalar_decay:
            return scalar_decay_work_bytes(lead, L, n, element, chunk) + spread
        return decay_attention_work_bytes(lead, L, n, element, chunk) + spread

    def compose_bytes(self, lead: int, queries: int) -> int:
        """Peak bytes a chunk of `lead` = batch × channels maps needs besides `core`'s (estimated, an
        upper bound; see `compose_work_bytes`)."""
        b, d, L = self.shape
        heads = (self.log_decay, self.C, self.B)
        broadcast = self.head_index is None and (max(x.shape[0] for x in heads) < b
                                                 or max(x.shape[1] for x in heads) < d)
        return compose_work_bytes(lead, queries, L, self.n, self.value.element_size(),
                                  conv=self.conv_weight is not None, initial_state=self.initial_state is not None,
                                  broadcast=broadcast)

    def per_channel(self, x: Tensor) -> Tensor:
        """An operand of `log_decay`, `C`, `B` with one row per channel (indexing heads if shared)."""
        if self.head_index is None or x.shape[1] == 1:
            return x
        return x.index_select(1, self.head_index.to(x.device))

    def channels(self, index: Tensor) -> LinearForm:
        """The form restricted to channels `index` [k] (broadcast axes stay as they are)."""

        def pick(t: Tensor | None, axis: int = 1) -> Tensor | None:
            if t is None or t.shape[axis] == 1:
                return t
            return t.index_select(axis, index)

        if self.head_index is not None:  # operands stay per head; the channels name their heads
            heads = {"log_decay": self.log_decay, "C": self.C, "B": self.B,
                     "head_index": self.head_index.to(index.device)[index]}
        else:
            heads = {"log_decay": pick(self.log_decay), "C": pick(self.C), "B": pick(self.B)}
        return replace(
            self, **heads,
            value=pick(self.value), output=pick(self.output), skip=pick(self.skip),
            col_scale=pick(self.col_scale), row_scale=pick(self.row_scale),
            conv_weight=pick(self.conv_weight, 0), conv_offset=pick(self.conv_offset),
            initial_state=pick(self.initial_state),
            projection=None if self.projection is None else self.projection.index_select(1, index),
        )

    # ----------------------------------------------------------------------------- maps
    def core(self, queries: Tensor | None = None, chunk: int | None = DEFAULT_CHUNK, spread: bool = True) -> Tensor:
        """α restricted to rows `queries` (all when None): [b, d, q, L].

        With `head_index`, α is computed once per head in use and shared by the head's channels;
        `spread=False` returns it per head, [b, heads in use (sorted), q, L], for `compose(...,
        per_head=True)` to spread over the channels (into the caller's result).
        """
        log_decay, C, B = self.log_decay, self.C, self.B
        inverse = None
        if self.head_index is not None:
            heads, inverse = torch.unique(self.head_index.to(log_decay.device), return_inverse=True)
            log_decay, C, B = (x if x.shape[1] == 1 else x.index_select(1, heads) for x in (log_decay, C, B))
        if queries is not None:
            alpha = torch.stack([decay_attention_row(log_decay, C, B, int(t)) for t in queries], dim=-2)
        elif self.scalar_decay:
            alpha = scalar_decay_attention(log_decay[..., 0], C, B, chunk)
        else:
            alpha = decay_attention(log_decay, C, B, chunk)
        if inverse is not None and spread:
            alpha = alpha.expand(alpha.shape[0], len(heads), *alpha.shape[2:]) if alpha.shape[1] == 1 else alpha
            alpha = alpha.index_select(1, inverse)
        return alpha

    def compose(self, alpha: Tensor, queries: Tensor, per_head: bool = False,
                out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(Ã, bias) for rows `queries` from α [b, d, q, L]: the module's equation, vectorised.

        α is overwritten with Ã (it is the kernel's fresh map) a block of query rows at a time, each
        block taking every step (skip, col, the conv offset's bias, conv, row) while it is in cache:
        one read and one write of the L×L map instead of one per step and a second map for the conv.
        A broadcast α, or with `per_head` α per head in use (`core(spread=False)`), is first copied out
        to the channels into a new map; `out` [b, d, q, L] (a caller's result, e.g. a slice of all
        channels' maps) takes that map's place, saving a copy. The copy is made before the loop, not
        block by block inside it: the new pages' first touch would scatter over the channels
        (benchmarks/implicit_attention_results.md, "Choices measured").
        """
        b, d = self.value.shape[:2]
        q, L = alpha.shape[-2:]
        inverse = None  # [d]: row of the per-head α serving each channel
        if per_head and alpha.shape[1] > 1:
            _, inverse = torch.unique(self.head_index.to(alpha.device), return_inverse=True)
            source = alpha.expand(b, alpha.shape[1], q, L)
        elif alpha.shape != (b, d, q, L) or any(st == 0 and n > 1 for st, n in zip(alpha.stride(), alpha.shape,
                                                                                    strict=True)):
            source = alpha.expand(b, d, q, L)  # a broadcast α: the steps below write in place
        else:
            source = alpha if out is not None else None  # (one head's α for one channel: copied into out)
        if out is not None and (out.shape != (b, d, q, L) or out.dtype != alpha.dtype):
            raise ValueError(f"out= must be a {alpha.dtype} tensor of shape {(b, d, q, L)}, "
                             f"not {out.dtype} {tuple(out.shape)}")
        if source is not None:
            alpha = out if out is not None else torch.empty(b, d, q, L, dtype=source.dtype, device=source.device)
        if inverse is not None:  # one sequential pass: its first touch of the new pages is cheaper than by blocks
            torch.index_select(source, 1, inverse, out=alpha)
        elif source is not None:
            alpha.copy_(source)
        bias = torch.zeros(b, d, q, dtype=alpha.dtype, device=alpha.device)  # [b, d, q]
        rows = max(1, min(q, COMPOSE_BLOCK_BYTES // max(1, b * d * L * alpha.element_size())))
        for r0 in range(0, q, rows):
            r1 = min(q, r0 + rows)
            block, tq = alpha[..., r0:r1, :], queries[r0:r1]  # [b, d, rows, L] view, [rows]
            if self.skip is not None:
                block[..., torch.arange(r1 - r0, device=alpha.device), tq] += self.skip[..., tq]
            if self.col_scale is not None:
                block.mul_(self.col_scale[..., None, :])
            if self.conv_weight is not None:
                if self.conv_offset is not None:
                    bias[..., r0:r1] += (block @ self.conv_offset[..., :, None])[..., 0]
                convolved = causal_conv_right(block, self.conv_weight)  # [b, d, rows, L], in cache
                if self.row_scale is not None:
                    torch.mul(convolved, self.row_scale[..., tq, None], out=block)
                else:
                    block.copy_(convolved)
            elif self.row_scale is not None:
                block.mul_(self.row_scale[..., tq, None])
        if self.initial_state is not None:
            term = initial_state_term(self.per_channel(self.log_decay), self.per_channel(self.C),
                                      self.initial_state)  # [b, d, L]
            bias = bias + term[..., queries]
        if self.row_scale is not None:
            bias = bias * self.row_scale[..., queries]
        return alpha, bias


    # ------------------------------------------------------------------------ recurrence
    def recur(self, value: Tensor) -> Tensor:
        """The layer step by step with every gate held at its recorded value: y [b, d, L] from v.

        Independent of the maps (a loop, not a matrix), so autograd through it gives ∂y/∂v with the
        gates detached, which must equal Ã (Zimerman et al. 2024, section 3).
        """
        u = value  # [b, d, L]
        if self.conv_weight is not None:
            k = self.conv_weight.shape[-1]
            u = F.conv1d(F.pad(u, (k - 1, 0)), self.conv_weight[:, None, :], groups=u.shape[1])
            if self.conv_offset is not None:
                u = u + self.conv_offset
        if self.col_scale is not None:
            u = self.col_scale * u
        b, d, L = value.shape
        s = (self.initial_state if self.initial_state is not None
             else value.new_zeros(b, d, self.n))  # [b, d, n]
        ys = []

        log_decay, C, B = (self.per_channel(x) for x in (self.log_decay, self.C, self.B))

        def at(x: Tensor, t: int) -> Tensor:  # position t of a [b, d, L, n] operand, or its broadcast
            return x[:, :, t if x.shape[2] > 1 else 0]

        for t in range(L):
            s = at(log_decay, t).exp() * s + at(B, t) * u[..., t, None]
            y = (at(C, t) * s).sum(-1)  # [b, d]
            if self.skip is not None:
                y = y + self.skip[..., t] * u[..., t]
            ys.append(y)
        y = torch.stack(ys, dim=-1)  # [b, d, L]
        return self.row_scale * y if self.row_scale is not None else y


def causal_conv_right(P: Tensor, weight: Tensor) -> Tensor:
    """P · Conv for a causal depthwise conv: out[.., t, m] = Σ_s P[.., t, m+s] w[k−1−s]; P [b,d,q,L].

    A new map and k − 1 in-place shifted multiply-adds (no padded copy, no per-tap temporaries)."""
    k, L = weight.shape[-1], P.shape[-1]
    taps = weight[None, :, None, :]  # [1, d, 1, k]
    out = P * taps[..., k - 1 : k]  # tap s = 0
    for s in range(1, min(k, L)):  # k is the conv width (4): columns m < L − s receive P[.., m + s]
        out[..., : L - s].addcmul_(P[..., s:], taps[..., k - 1 - s : k - s])
    return out
