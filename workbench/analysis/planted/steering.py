"""A small LSTM with hand-set weights in which one residual direction provably controls one logit.

Ground truth for steering (Rimsky et al. 2024; Paulo, Marshall & Belrose 2024): a cell latches on
`#` and clears at a newline (a comment flag), writes the residual direction `COMMENT_DIRECTION`,
and the unembedding reads that direction into the logit of `#` alone. So the contrastive vector of
"in a comment" vs "not" is that direction, the cell-state vector is that cell, and steering either
moves exactly one logit by a known amount.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from workbench.analysis.planted.base import planted_lm

if TYPE_CHECKING:
    from workbench.models import HookedRecurrentLM

__all__ = ["COMMENT_CELL", "COMMENT_DIRECTION", "LOGIT_GAIN", "planted_steering_lstm"]

COMMENT_CELL = 0  # unit of layer 0's cell state that is 1 inside a comment, else 0
COMMENT_DIRECTION = 3  # residual direction the cell writes (h = tanh(c) rescaled to c)
LOGIT_GAIN = 5.0  # logit('#') = LOGIT_GAIN × resid[COMMENT_DIRECTION] at the last layer
_HASH, _NEWLINE, _ONE = 0, 1, 2  # embedding directions the cell reads


@torch.no_grad()
def planted_steering_lstm(
    tokenizer: Any = None, *, n_layers: int = 1, d_model: int = 8, d_hidden: int = 4,
    strength: float = 20.0, seed: int = 0,
) -> HookedRecurrentLM:
    """An LSTM language model (no norms) with a planted comment cell in layer 0.

    With B = `strength`: i = σ(B(2·[#] − 1)), f = σ(B(1 − 2·[newline])), g = tanh(B) ≈ 1, o ≈ 1,
    so c = 1 from a `#` up to the next newline and 0 elsewhere; the mixer writes c (exactly, via
    W_out = 1/tanh(1)) to residual direction 3, later blocks add nothing, and the unembedding maps
    that direction to logit('#') with gain 5; every other logit is 0.
    """
    if d_model < 4 or d_hidden < 1:
        raise ValueError("a planted steering LSTM needs d_model >= 4 and d_hidden >= 1")
    model = planted_lm(tokenizer, seed, family="lstm", n_layers=n_layers, d_model=d_model, d_hidden=d_hidden,
                       norm="none", metadata={"planted": "comment cell -> logit('#')"})
    tok = model.tokenizer
    for p in model.parameters():
        p.zero_()
    emb = model.embed.weight  # [d_vocab, d_model]
    emb[:, 4:] = 0.1 * torch.randn(len(tok), d_model - 4)  # content the planted cell ignores
    emb[:, _ONE] = 1.0
    emb[tok.stoi["#"], _HASH] = 1.0
    emb[tok.stoi["\n"], _NEWLINE] = 1.0
    mixer = model.blocks[0].mixer
    cell = mixer.cell
    w_ih, H, B = cell.weight_ih_l0, d_hidden, strength  # rows i, f, g, o of [4H, d_model]
    i, f, g, o = (gate * H + COMMENT_CELL for gate in range(4))
    w_ih[i, _HASH], w_ih[i, _ONE] = 2 * B, -B
    w_ih[f, _ONE], w_ih[f, _NEWLINE] = B, -2 * B
    w_ih[g, _ONE] = B
    w_ih[o, _ONE] = B
    mixer.W_out.weight[COMMENT_DIRECTION, COMMENT_CELL] = 1.0 / math.tanh(1.0)
    model.unembed.weight[tok.stoi["#"], COMMENT_DIRECTION] = LOGIT_GAIN
    return model
